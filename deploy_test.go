package livepush_test

// Static checks for the deployment files (compose.yaml, Dockerfile,
// .dockerignore). No Docker engine is needed: compose.yaml is loaded with the
// same library docker compose uses (compose-go), and the Dockerfile is parsed
// into stages and instructions here.
//
// Every check returns errors instead of failing directly, so that the
// *CatchesMistakes tests can prove each check fails on a broken file.

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

const (
	composeFile    = "compose.yaml"
	dockerfileName = "Dockerfile"
	projectName    = "livepush"
	binDir         = "/usr/local/bin"
	natsClientPort = "4222" // nats-server default; compose does not override it
	pushPort       = "8080"
)

// binaries built into every runtime image.
var binaries = []string{"push", "feeds", "subscribe"}

// builtServices are the compose services built from the repository Dockerfile.
var builtServices = []string{"feeds", "push"}

// ---------------------------------------------------------------- compose ----

func TestComposeProject(t *testing.T) {
	p := loadCompose(t)
	df := readDockerfile(t)
	for _, err := range checkCompose(p, df) {
		t.Error(err)
	}
}

func TestComposeChecksCatchMistakes(t *testing.T) {
	df := readDockerfile(t)
	cases := []struct {
		name   string
		mutate func(p *types.Project)
		want   string // substring of at least one reported error
	}{
		{"service missing", func(p *types.Project) { delete(p.Services, "feeds") }, `service "feeds" missing`},
		{"no push healthcheck", edit("push", func(s *types.ServiceConfig) { s.HealthCheck = nil }), "push: no healthcheck"},
		{"disabled feeds healthcheck", edit("feeds", func(s *types.ServiceConfig) { s.HealthCheck.Disable = true }), "feeds: healthcheck disabled"},
		{"no nats healthcheck", edit("nats", func(s *types.ServiceConfig) { s.HealthCheck = nil }), "nats: no healthcheck"},
		{"curl in distroless", edit("push", func(s *types.ServiceConfig) {
			s.HealthCheck.Test = types.HealthCheckTest{"CMD-SHELL", "curl -f http://localhost:8080/readyz"}
		}), "no shell"},
		{"push checks liveness only", edit("push", func(s *types.ServiceConfig) {
			s.HealthCheck.Test = types.HealthCheckTest{"CMD", "/usr/local/bin/push", "-healthcheck", "http://127.0.0.1:8080/healthz"}
		}), "/readyz"},
		{"nats healthcheck wrong port", edit("nats", func(s *types.ServiceConfig) {
			s.HealthCheck.Test = types.HealthCheckTest{"CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8223/healthz"}
		}), "monitoring port"},
		{"no restart policy", edit("feeds", func(s *types.ServiceConfig) { s.Restart = "" }), "feeds: no restart policy"},
		{"restart no", edit("nats", func(s *types.ServiceConfig) { s.Restart = "no" }), "nats: no restart policy"},
		{"jetstream off", edit("nats", func(s *types.ServiceConfig) {
			s.Command = slices.DeleteFunc(slices.Clone(s.Command), func(a string) bool { return flagName(a) == "jetstream" || flagName(a) == "js" })
		}), "JetStream"},
		{"no store dir", edit("nats", func(s *types.ServiceConfig) { s.Command = types.ShellCommand{"nats-server", "-js", "-m", "8222"} }), "store dir"},
		{"store not on volume", edit("nats", func(s *types.ServiceConfig) { s.Volumes = nil }), "named volume"},
		{"store on bind mount", edit("nats", func(s *types.ServiceConfig) {
			s.Volumes = []types.ServiceVolumeConfig{{Type: types.VolumeTypeBind, Source: "/tmp/nats", Target: "/data"}}
		}), "named volume"},
		{"unofficial nats image", edit("nats", func(s *types.ServiceConfig) { s.Image = "bitnami/nats:2" }), "official"},
		{"unpinned nats image", edit("nats", func(s *types.ServiceConfig) { s.Image = "nats" }), "pin"},
		{"push not published", edit("push", func(s *types.ServiceConfig) { s.Ports = nil }), "publish"},
		{"push published elsewhere", edit("push", func(s *types.ServiceConfig) { s.Ports[0].Published = "18080" }), "publish"},
		{"push listens elsewhere", edit("push", func(s *types.ServiceConfig) { s.Environment["PUSH_ADDR"] = ptr(":9090") }), "PUSH_ADDR"},
		{"push starts before nats is healthy", edit("push", func(s *types.ServiceConfig) {
			s.DependsOn["nats"] = types.ServiceDependency{Condition: types.ServiceConditionStarted, Required: true}
		}), "service_healthy"},
		{"feeds does not wait for nats", edit("feeds", func(s *types.ServiceConfig) { s.DependsOn = nil }), "depend on nats"},
		{"feeds not built", edit("feeds", func(s *types.ServiceConfig) { s.Build = nil; s.Image = "livepush/feeds" }), "built from"},
		{"push built elsewhere", edit("push", func(s *types.ServiceConfig) { s.Build.Context = "/elsewhere" }), "context"},
		{"push runs wrong binary", edit("push", func(s *types.ServiceConfig) { s.Build.Target = "feeds" }), "runs"},
		{"unknown target", edit("push", func(s *types.ServiceConfig) { s.Build.Target = "edge" }), "no stage"},
		{"NATS_URL localhost", edit("push", func(s *types.ServiceConfig) { s.Environment["NATS_URL"] = ptr("nats://localhost:4222") }), "NATS_URL"},
		{"NATS_URL missing", edit("feeds", func(s *types.ServiceConfig) { delete(s.Environment, "NATS_URL") }), "NATS_URL"},
		{"NATS_URL wrong port", edit("feeds", func(s *types.ServiceConfig) { s.Environment["NATS_URL"] = ptr("nats://nats:8222") }), "NATS_URL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := loadCompose(t) // fresh copy: mutations must not leak
			tc.mutate(p)
			errs := checkCompose(p, df)
			if len(errs) == 0 {
				t.Fatalf("checkCompose accepted a broken project (%s)", tc.name)
			}
			t.Logf("reported:\n%s", errors.Join(errs...))
			if !slices.ContainsFunc(errs, func(err error) bool { return strings.Contains(err.Error(), tc.want) }) {
				t.Errorf("no error mentions %q; got:\n%s", tc.want, errors.Join(errs...))
			}
		})
	}
}

func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{composeFile},
		cli.WithName(projectName),
		cli.WithWorkingDirectory("."),
	)
	if err != nil {
		t.Fatalf("compose options: %v", err)
	}
	p, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("load %s: %v", composeFile, err)
	}
	return p
}

func edit(name string, f func(s *types.ServiceConfig)) func(p *types.Project) {
	return func(p *types.Project) {
		s := p.Services[name]
		f(&s)
		p.Services[name] = s
	}
}

func ptr(s string) *string { return &s }

// checkCompose reports what an operator running `docker compose up` would
// trip over.
func checkCompose(p *types.Project, df *dockerfile) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	for _, name := range []string{"nats", "feeds", "push"} {
		if _, ok := p.Services[name]; !ok {
			fail("service %q missing from %s", name, composeFile)
		}
	}

	// Every service: health check and restart policy.
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		s := p.Services[name]
		switch hc := s.HealthCheck; {
		case hc == nil:
			fail("%s: no healthcheck", name)
		case hc.Disable:
			fail("%s: healthcheck disabled", name)
		case len(hc.Test) < 2 || (hc.Test[0] != "CMD" && hc.Test[0] != "CMD-SHELL"):
			fail("%s: healthcheck test %q is not a CMD/CMD-SHELL command", name, hc.Test)
		}
		if s.Restart == "" || s.Restart == types.RestartPolicyNo {
			fail("%s: no restart policy (restart: %q)", name, s.Restart)
		}
	}

	if nats, ok := p.Services["nats"]; ok {
		errs = append(errs, checkNATS(p, nats)...)
	}

	for _, name := range builtServices {
		s, ok := p.Services[name]
		if !ok {
			continue
		}
		errs = append(errs, checkBuiltService(p, s, df)...)
	}

	if push, ok := p.Services["push"]; ok {
		published := slices.ContainsFunc(push.Ports, func(pc types.ServicePortConfig) bool {
			return fmt.Sprint(pc.Target) == pushPort && pc.Published == pushPort &&
				(pc.Protocol == "" || pc.Protocol == "tcp")
		})
		if !published {
			fail("push: container port %s is not published on host port %s (ports: %+v)", pushPort, pushPort, push.Ports)
		}
		if addr := envValue(push, "PUSH_ADDR"); addr != "" {
			if _, port, err := net.SplitHostPort(addr); err != nil || port != pushPort {
				fail("push: PUSH_ADDR=%q does not listen on the published port %s", addr, pushPort)
			}
		}
		if hc := push.HealthCheck; hc != nil && !hc.Disable {
			u := healthURL(hc.Test)
			if u == nil || u.Path != "/readyz" || u.Port() != pushPort {
				fail("push: healthcheck %q must probe /readyz on port %s (a ready edge has NATS and the stream)", hc.Test, pushPort)
			}
		}
	}

	if feeds, ok := p.Services["feeds"]; ok {
		if hc := feeds.HealthCheck; hc != nil && !hc.Disable {
			u := healthURL(hc.Test)
			_, port, _ := net.SplitHostPort(envValue(feeds, "FEEDS_HEALTH_ADDR"))
			switch {
			case u == nil || u.Path != "/healthz":
				fail("feeds: healthcheck %q must probe /healthz", hc.Test)
			case port != "" && u.Port() != port:
				fail("feeds: healthcheck probes port %s but FEEDS_HEALTH_ADDR listens on %s", u.Port(), port)
			}
		}
	}
	return errs
}

func checkNATS(p *types.Project, s types.ServiceConfig) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf("nats: "+format, args...)) }

	repo, tag, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(s.Image, "docker.io/"), "library/"), ":")
	if repo != "nats" {
		fail("image %q is not the official nats image", s.Image)
	}
	if tag == "" || tag == "latest" {
		fail("image %q: pin a nats release tag", s.Image)
	}

	args := []string(s.Command)
	if len(args) > 0 && args[0] == "nats-server" {
		// Only the alpine variant's entrypoint passes a leading program name
		// through; the scratch image's entrypoint is nats-server itself.
		if !strings.Contains(tag, "alpine") {
			fail("command starts with nats-server, which only works with the alpine image (image %q)", s.Image)
		}
		args = args[1:]
	}
	flags := parseFlags(args)
	if !flags.has("js", "jetstream") {
		fail("JetStream is not enabled (command %q lacks -js/--jetstream)", s.Command)
	}
	storeDir := flags.value("sd", "store_dir")
	if storeDir == "" {
		fail("no JetStream store dir (-sd/--store_dir) in command %q: streams would live in a temp dir inside the container", s.Command)
	} else {
		onVolume := slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
			_, declared := p.Volumes[v.Source]
			return v.Type == types.VolumeTypeVolume && declared && path.Clean(v.Target) == path.Clean(storeDir)
		})
		if !onVolume {
			fail("store dir %s is not a declared named volume mount (volumes: %+v)", storeDir, s.Volumes)
		}
	}
	if port := flags.value("p", "port"); port != "" && port != natsClientPort {
		fail("client port %s, but the services use %s", port, natsClientPort)
	}

	monitor := flags.value("m", "http_port")
	if monitor == "" {
		fail("monitoring endpoint not enabled (-m/--http_port): nothing for the healthcheck to probe")
	}
	if hc := s.HealthCheck; hc != nil && !hc.Disable && monitor != "" {
		u := healthURL(hc.Test)
		if u == nil || u.Port() != monitor || u.Path != "/healthz" {
			fail("healthcheck %q does not probe /healthz on the monitoring port %s", hc.Test, monitor)
		} else if u.Query().Get("js-enabled-only") != "true" {
			fail("healthcheck %q should use ?js-enabled-only=true so that a server without JetStream is unhealthy", hc.Test)
		}
	}
	return errs
}

func checkBuiltService(p *types.Project, s types.ServiceConfig, df *dockerfile) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(s.Name+": "+format, args...)) }

	if dep, ok := s.DependsOn["nats"]; !ok {
		fail("does not depend on nats")
	} else if dep.Condition != types.ServiceConditionHealthy {
		fail("depends on nats with condition %q, want %s", dep.Condition, types.ServiceConditionHealthy)
	}

	natsURL := envValue(s, "NATS_URL")
	if u, err := url.Parse(natsURL); natsURL == "" || err != nil || u.Scheme != "nats" ||
		u.Hostname() != "nats" || u.Port() != natsClientPort {
		fail("NATS_URL=%q, want nats://nats:%s (an empty value makes push embed its own server)", natsURL, natsClientPort)
	} else if _, ok := p.Services[u.Hostname()]; !ok {
		fail("NATS_URL host %q is not a compose service", u.Hostname())
	}

	if s.Build == nil {
		fail("not built from the repository %s (image %q)", dockerfileName, s.Image)
		return errs
	}
	root, err := filepath.Abs(".")
	if err != nil {
		fail("%v", err)
		return errs
	}
	if filepath.Clean(s.Build.Context) != root {
		fail("build context %q is not the repository root %q", s.Build.Context, root)
	}
	file := s.Build.Dockerfile
	if file == "" {
		file = dockerfileName
	}
	if !filepath.IsAbs(file) {
		file = filepath.Join(s.Build.Context, file)
	}
	if filepath.Clean(file) != filepath.Join(root, dockerfileName) {
		fail("built from %q, want the repository %s", file, dockerfileName)
	}

	// Which binary does the container run? A service-level entrypoint wins
	// over the build target's ENTRYPOINT.
	var stage *stage
	if s.Build.Target == "" {
		stage = df.last()
	} else if stage = df.stage(s.Build.Target); stage == nil {
		fail("build target %q: %s has no stage with that name", s.Build.Target, dockerfileName)
	}
	entrypoint := []string(s.Entrypoint)
	if len(entrypoint) == 0 && stage != nil {
		entrypoint, _ = stage.entrypoint()
	}
	if len(entrypoint) == 0 || path.Base(entrypoint[0]) != s.Name {
		fail("container runs %q, want the %s binary (target %q)", entrypoint, s.Name, s.Build.Target)
	}

	// The runtime image is distroless: no shell, no curl, no wget. The
	// health check has to exec one of our binaries.
	if hc := s.HealthCheck; hc != nil && !hc.Disable && len(hc.Test) >= 2 {
		if hc.Test[0] != "CMD" || !slices.Contains(binaries, path.Base(hc.Test[1])) ||
			(path.IsAbs(hc.Test[1]) && path.Dir(hc.Test[1]) != binDir) {
			fail("healthcheck %q: the image has no shell or curl; use [CMD, %s/<binary>, -healthcheck, URL]", hc.Test, binDir)
		}
	}
	return errs
}

func envValue(s types.ServiceConfig, key string) string {
	if v := s.Environment[key]; v != nil {
		return *v
	}
	return ""
}

// healthURL returns the first http(s) URL in a health check command.
func healthURL(test types.HealthCheckTest) *url.URL {
	if len(test) < 2 {
		return nil
	}
	for _, f := range strings.Fields(strings.Join(test[1:], " ")) {
		f = strings.Trim(f, `'"`)
		if strings.HasPrefix(f, "http://") || strings.HasPrefix(f, "https://") {
			if u, err := url.Parse(f); err == nil {
				return u
			}
		}
	}
	return nil
}

// cmdFlags is a Go-flag-package style parse: -x, --x, -x=v, --x v.
type cmdFlags map[string]string

func flagName(arg string) string {
	if !strings.HasPrefix(arg, "-") {
		return ""
	}
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	return name
}

func parseFlags(args []string) cmdFlags {
	f := cmdFlags{}
	for i := 0; i < len(args); i++ {
		name := flagName(args[i])
		if name == "" {
			continue
		}
		if _, v, ok := strings.Cut(args[i], "="); ok {
			f[name] = v
		} else if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			f[name] = args[i+1]
			i++
		} else {
			f[name] = "true"
		}
	}
	return f
}

func (f cmdFlags) has(names ...string) bool {
	for _, n := range names {
		if v, ok := f[n]; ok && v != "false" {
			return true
		}
	}
	return false
}

func (f cmdFlags) value(names ...string) string {
	for _, n := range names {
		if v := f[n]; v != "" && v != "true" {
			return v
		}
	}
	return ""
}

// ------------------------------------------------------------- Dockerfile ----

func TestDockerfile(t *testing.T) {
	for _, err := range checkDockerfile(readDockerfile(t)) {
		t.Error(err)
	}
}

func TestDockerfileChecksCatchMistakes(t *testing.T) {
	raw, err := os.ReadFile(dockerfileName)
	if err != nil {
		t.Fatal(err)
	}
	orig := string(raw)
	replace := func(re, repl string) func(t *testing.T) string {
		return func(t *testing.T) string {
			rx := regexp.MustCompile(re)
			if !rx.MatchString(orig) {
				t.Fatalf("mutation %q does not apply to %s; update this test", re, dockerfileName)
			}
			return rx.ReplaceAllString(orig, repl)
		}
	}
	fixed := func(s string) func(t *testing.T) string { return func(*testing.T) string { return s } }
	cases := []struct {
		name string
		text func(t *testing.T) string
		want string
	}{
		{"single stage", fixed("FROM golang:1.26-bookworm\nENV CGO_ENABLED=0\nCOPY . .\nRUN go build -trimpath ./cmd/push ./cmd/feeds ./cmd/subscribe\nUSER 65532\nENTRYPOINT [\"push\"]\n"), "multi-stage"},
		{"cgo on", replace(`CGO_ENABLED=0`, "CGO_ENABLED=1"), "CGO_ENABLED"},
		{"cgo unset", replace(`CGO_ENABLED=0`, "CGO_DISABLED=1"), "CGO_ENABLED=0"},
		{"no trimpath", replace(`-trimpath `, ""), "-trimpath"},
		{"subscribe not built", replace(` \./cmd/subscribe`, ""), "./cmd/subscribe"},
		{"no dependency layer", replace(`(?m)^RUN[^\n]*\\\n\s*go mod download\n`, ""), "go mod download"},
		{"fat final image", replace(`gcr\.io/distroless/static-debian12:nonroot`, "debian:bookworm-slim"), "distroless"},
		{"root user", replace(`(?m)^USER .*$`, "USER root"), "root"},
		{"no user", replace(`(?m)^USER .*$`, ""), "USER"},
		{"no push healthcheck", replace(`(?s)(AS push\n.*?)HEALTHCHECK[^\n]*\\\n[^\n]*\n`, "$1"), "push: no HEALTHCHECK"},
		{"feeds healthcheck via curl", replace(`CMD \["/usr/local/bin/feeds", "-healthcheck", `, `CMD ["curl", "-f", `), "feeds: HEALTHCHECK"},
		{"push not exposed", replace(`EXPOSE 8080`, "EXPOSE 9090"), "EXPOSE 8080"},
		{"wrong entrypoint", replace(`ENTRYPOINT \["/usr/local/bin/push"\]`, `ENTRYPOINT ["/usr/local/bin/feeds"]`), "push: runs"},
		{"binaries elsewhere", replace(`/usr/local/bin/\n`, "/app/\n"), binDir},
		{"build stage last", fixed(orig + "\nFROM golang:1.26-bookworm AS dev\n"), "final stage"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			errs := checkDockerfile(parseDockerfile(tc.text(t)))
			if len(errs) == 0 {
				t.Fatalf("checkDockerfile accepted a broken Dockerfile (%s)", tc.name)
			}
			t.Logf("reported:\n%s", errors.Join(errs...))
			if !slices.ContainsFunc(errs, func(err error) bool { return strings.Contains(err.Error(), tc.want) }) {
				t.Errorf("no error mentions %q; got:\n%s", tc.want, errors.Join(errs...))
			}
		})
	}
}

func TestDockerfileBuildContext(t *testing.T) {
	raw, err := os.ReadFile(".dockerignore")
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	errs := checkDockerignore(string(raw))
	for _, err := range errs {
		t.Error(err)
	}
	// And the check can fail.
	if len(checkDockerignore("node_modules\n")) == 0 {
		t.Error("checkDockerignore accepted a file that sends .git")
	}
	if len(checkDockerignore(string(raw)+"\ngo.sum\n")) == 0 {
		t.Error("checkDockerignore accepted a file that drops go.sum")
	}
}

func checkDockerignore(text string) []error {
	var errs []error
	patterns := map[string]bool{}
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		patterns[strings.TrimSuffix(strings.TrimPrefix(line, "/"), "/")] = true
	}
	for _, want := range []string{".git", "**/node_modules"} {
		if !patterns[want] && !patterns[strings.TrimPrefix(want, "**/")] {
			errs = append(errs, fmt.Errorf(".dockerignore does not exclude %s", want))
		}
	}
	// The build needs these; excluding them breaks `go mod download` /
	// `go build` inside the image.
	for _, need := range []string{"go.mod", "go.sum", "cmd", "internal", "*", "**", "*.go", "**/*.go"} {
		if patterns[need] {
			errs = append(errs, fmt.Errorf(".dockerignore excludes %s, which the build needs", need))
		}
	}
	return errs
}

func readDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	raw, err := os.ReadFile(dockerfileName)
	if err != nil {
		t.Fatalf("read %s: %v", dockerfileName, err)
	}
	return parseDockerfile(string(raw))
}

func checkDockerfile(df *dockerfile) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if len(df.stages) < 2 {
		fail("not a multi-stage build (%d FROM)", len(df.stages))
	}

	// Build stage(s): whoever runs `go build`.
	var builds []*stage
	built := map[string]bool{}
	for _, s := range df.stages {
		for _, run := range s.all("RUN") {
			if !strings.Contains(run.args, "go build") {
				continue
			}
			if !slices.Contains(builds, s) {
				builds = append(builds, s)
			}
			for _, b := range binaries {
				if regexp.MustCompile(`(^|\s)\./cmd/` + b + `/?(\s|$)`).MatchString(run.args) {
					built[b] = true
				}
			}
			if !strings.Contains(run.args, "-trimpath") {
				fail("line %d: go build without -trimpath", run.line)
			}
			if !regexp.MustCompile(`-ldflags=?["']?[^"']*-s -w`).MatchString(run.args) {
				fail(`line %d: go build without -ldflags="-s -w"`, run.line)
			}
			if m := regexp.MustCompile(`CGO_ENABLED=(\S+)`).FindStringSubmatch(run.args); m != nil {
				if m[1] != "0" {
					fail("line %d: CGO_ENABLED=%s: the runtime base has no libc", run.line, m[1])
				}
			} else if s.env()["CGO_ENABLED"] != "0" {
				fail("line %d: go build without CGO_ENABLED=0 (stage env has CGO_ENABLED=%q): the binaries would not be static", run.line, s.env()["CGO_ENABLED"])
			}
		}
	}
	if len(builds) == 0 {
		fail("no stage runs go build")
	}
	for _, b := range binaries {
		if !built[b] {
			fail("./cmd/%s is never built", b)
		}
	}
	for _, s := range builds {
		if !strings.HasPrefix(s.baseImage(), "golang:") {
			fail("build stage %q is based on %q, want an official golang image", s.name, s.baseImage())
		}
		// Cached dependency layer: COPY go.mod go.sum, RUN go mod download,
		// then COPY the sources.
		modCopy, download, srcCopy := -1, -1, -1
		for i, in := range s.instrs {
			switch {
			case in.cmd == "COPY" && strings.Contains(in.args, "go.mod") && strings.Contains(in.args, "go.sum") && modCopy < 0:
				modCopy = i
			case in.cmd == "RUN" && strings.Contains(in.args, "go mod download") && download < 0:
				download = i
			case in.cmd == "COPY" && regexp.MustCompile(`(^|\s)\.\s+\S+$`).MatchString(in.args) && srcCopy < 0:
				srcCopy = i
			}
		}
		if !(modCopy >= 0 && modCopy < download && download < srcCopy) {
			fail("build stage %q: want COPY go.mod go.sum, RUN go mod download, then COPY . (a cached go mod download layer)", s.name)
		}
	}

	// Runtime images: the final stage (default target) and the targets
	// compose builds.
	final := df.last()
	if final != nil {
		if ep, _ := final.entrypoint(); len(ep) == 0 || path.Base(ep[0]) != "push" {
			fail("final stage %q (the default target) runs %q, want push", final.name, ep)
		}
	}
	runtimes := []*stage{final}
	for _, name := range builtServices {
		s := df.stage(name)
		if s == nil {
			fail("no %q stage (compose builds target %s)", name, name)
			continue
		}
		if !slices.Contains(runtimes, s) {
			runtimes = append(runtimes, s)
		}
	}
	for _, s := range runtimes {
		if s == nil {
			continue
		}
		label := s.name
		if label == "" {
			label = "final stage"
		}
		base := s.baseImage()
		if !strings.HasPrefix(base, "gcr.io/distroless/static") && base != "scratch" {
			fail("%s: based on %q, want gcr.io/distroless/static* or scratch", label, base)
		}
		switch user := s.user(); {
		case user == "":
			fail("%s: no USER: the container would run as root", label)
		case isRoot(user):
			fail("%s: USER %s is root", label, user)
		}
		for _, b := range binaries {
			if !s.copiesInto(b, binDir) {
				fail("%s: %s is not copied into %s", label, b, binDir)
			}
		}
	}

	for _, name := range builtServices {
		s := df.stage(name)
		if s == nil {
			continue
		}
		ep, err := s.entrypoint()
		if err != nil {
			fail("%s: %v", name, err)
		}
		if len(ep) == 0 || path.Base(ep[0]) != name {
			fail("%s: runs %q, want %s/%s", name, ep, binDir, name)
		}
		hc := s.last("HEALTHCHECK")
		if hc == nil || strings.TrimSpace(hc.args) == "NONE" {
			fail("%s: no HEALTHCHECK", name)
			continue
		}
		cmd, err := healthcheckCmd(hc.args)
		if err != nil {
			fail("%s: HEALTHCHECK (line %d): %v", name, hc.line, err)
		} else if len(cmd) < 3 || path.Base(cmd[0]) != name || !slices.Contains(cmd, "-healthcheck") {
			fail("%s: HEALTHCHECK %q: distroless has no curl; want [%s/%s, -healthcheck, URL]", name, cmd, binDir, name)
		}
	}
	if push := df.stage("push"); push != nil && !slices.ContainsFunc(push.chain(), func(s *stage) bool {
		return slices.ContainsFunc(s.all("EXPOSE"), func(in instruction) bool {
			return slices.Contains(strings.Fields(in.args), pushPort) || slices.Contains(strings.Fields(in.args), pushPort+"/tcp")
		})
	}) {
		fail("push: no EXPOSE %s", pushPort)
	}
	return errs
}

func isRoot(user string) bool {
	u, _, _ := strings.Cut(user, ":")
	return u == "root" || u == "0"
}

// healthcheckCmd returns the exec-form command of a HEALTHCHECK instruction.
func healthcheckCmd(args string) ([]string, error) {
	fields := strings.Fields(args)
	i := 0
	for i < len(fields) && strings.HasPrefix(fields[i], "--") {
		i++
	}
	if i >= len(fields) || fields[i] != "CMD" {
		return nil, errors.New("want HEALTHCHECK [OPTIONS] CMD [...]")
	}
	rest := strings.TrimSpace(args[strings.Index(args, " CMD ")+len(" CMD "):])
	var cmd []string
	if err := json.Unmarshal([]byte(rest), &cmd); err != nil {
		return nil, fmt.Errorf("CMD %s is not exec form (distroless has no /bin/sh): %v", rest, err)
	}
	return cmd, nil
}

// ------------------------------------------------- minimal Dockerfile AST ----

type instruction struct {
	cmd  string // upper case
	args string
	line int
}

type stage struct {
	name   string // lower case "AS" name, may be empty
	from   string // image or earlier stage name
	parent *stage // earlier stage this one is built FROM, if any
	instrs []instruction
}

type dockerfile struct {
	stages []*stage
}

func parseDockerfile(text string) *dockerfile {
	df := &dockerfile{}
	var cur *stage
	var buf strings.Builder
	start := 0
	lines := strings.Split(text, "\n")
	for i, raw := range lines {
		line := strings.TrimSpace(raw)
		if strings.HasPrefix(line, "#") || (line == "" && buf.Len() > 0) {
			continue // comments and blank lines inside continuations
		}
		if line == "" {
			continue
		}
		if buf.Len() == 0 {
			start = i + 1
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			buf.WriteString(cont + " ")
			continue
		}
		buf.WriteString(line)
		full := buf.String()
		buf.Reset()

		cmd, args, _ := strings.Cut(full, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		if in.cmd == "FROM" {
			cur = &stage{}
			var words []string
			for _, w := range strings.Fields(in.args) {
				if !strings.HasPrefix(w, "--") {
					words = append(words, w)
				}
			}
			if len(words) > 0 {
				cur.from = words[0]
			}
			if len(words) >= 3 && strings.EqualFold(words[1], "AS") {
				cur.name = strings.ToLower(words[2])
			}
			cur.parent = df.stage(cur.from)
			df.stages = append(df.stages, cur)
			continue
		}
		if cur != nil {
			cur.instrs = append(cur.instrs, in)
		}
	}
	return df
}

func (df *dockerfile) stage(name string) *stage {
	for _, s := range df.stages {
		if s.name != "" && s.name == strings.ToLower(name) {
			return s
		}
	}
	return nil
}

func (df *dockerfile) last() *stage {
	if len(df.stages) == 0 {
		return nil
	}
	return df.stages[len(df.stages)-1]
}

// chain lists the stages from the external base image down to s.
func (s *stage) chain() []*stage {
	var c []*stage
	for x := s; x != nil; x = x.parent {
		c = append([]*stage{x}, c...)
	}
	return c
}

func (s *stage) baseImage() string { return s.chain()[0].from }

func (s *stage) all(cmd string) []instruction {
	var out []instruction
	for _, x := range s.chain() {
		for _, in := range x.instrs {
			if in.cmd == cmd {
				out = append(out, in)
			}
		}
	}
	return out
}

func (s *stage) last(cmd string) *instruction {
	all := s.all(cmd)
	if len(all) == 0 {
		return nil
	}
	return &all[len(all)-1]
}

func (s *stage) user() string {
	if in := s.last("USER"); in != nil {
		return in.args
	}
	return ""
}

func (s *stage) entrypoint() ([]string, error) {
	in := s.last("ENTRYPOINT")
	if in == nil {
		return nil, nil
	}
	var ep []string
	if err := json.Unmarshal([]byte(in.args), &ep); err != nil {
		return strings.Fields(in.args), fmt.Errorf("line %d: ENTRYPOINT is not exec form (distroless has no /bin/sh)", in.line)
	}
	return ep, nil
}

// env evaluates ENV (and ARG defaults) along the stage chain; ${VAR} values
// are kept literally.
func (s *stage) env() map[string]string {
	env := map[string]string{}
	for _, x := range s.chain() {
		for _, in := range x.instrs {
			if in.cmd != "ENV" && in.cmd != "ARG" {
				continue
			}
			fields := strings.Fields(in.args)
			if in.cmd == "ENV" && len(fields) >= 2 && !strings.Contains(fields[0], "=") {
				env[fields[0]] = strings.Join(fields[1:], " ") // legacy "ENV K V"
				continue
			}
			for _, f := range fields {
				if k, v, ok := strings.Cut(f, "="); ok {
					env[k] = strings.Trim(v, `"'`)
				}
			}
		}
	}
	return env
}

// copiesInto reports whether some COPY in the chain puts binary bin into dir.
func (s *stage) copiesInto(bin, dir string) bool {
	for _, in := range s.all("COPY") {
		var words []string
		for _, w := range strings.Fields(in.args) {
			if !strings.HasPrefix(w, "--") {
				words = append(words, w)
			}
		}
		if len(words) < 2 {
			continue
		}
		dst, srcs := words[len(words)-1], words[:len(words)-1]
		for _, src := range srcs {
			if path.Base(src) != bin {
				continue
			}
			if path.Clean(dst) == dir && (strings.HasSuffix(dst, "/") || len(srcs) > 1) ||
				path.Clean(dst) == path.Join(dir, bin) {
				return true
			}
		}
	}
	return false
}

// ------------------------------------------------------ cluster profile ----

// TestComposeClusterProfile checks the production shape: three NATS nodes in one cluster holding the stream in
// three replicas, feeds and two edges pointed at all three, and a load balancer in front of the edges that
// passes streams through.
func TestComposeClusterProfile(t *testing.T) {
	opts, err := cli.NewProjectOptions([]string{composeFile}, cli.WithName(projectName),
		cli.WithWorkingDirectory("."), cli.WithProfiles([]string{"cluster"}))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("load %s with the cluster profile: %v", composeFile, err)
	}
	nodes := []string{"nats-1", "nats-2", "nats-3"}
	volumes := map[string]bool{}
	for _, name := range nodes {
		s, ok := p.Services[name]
		if !ok {
			t.Fatalf("service %s missing from the cluster profile", name)
		}
		if !strings.HasPrefix(s.Image, "nats:") || s.HealthCheck == nil || s.Restart == "" {
			t.Errorf("%s: image %q, health check %v, restart %q", name, s.Image, s.HealthCheck != nil, s.Restart)
		}
		flags := parseFlags(s.Command[1:])
		if !flags.has("jetstream", "js") || flags.value("server_name", "n") != name || flags.value("cluster_name") != "livepush" {
			t.Errorf("%s: command %q needs JetStream, its own server name and the cluster name", name, s.Command)
		}
		routes := flags.value("routes")
		for _, other := range nodes {
			if !strings.Contains(routes, other+":6222") {
				t.Errorf("%s: routes %q miss %s", name, routes, other)
			}
		}
		if len(s.Volumes) != 1 || volumes[s.Volumes[0].Source] || s.Volumes[0].Target != flags.value("store_dir", "sd") {
			t.Errorf("%s: needs its own named volume at its store dir: %+v", name, s.Volumes)
		}
		volumes[s.Volumes[0].Source] = true
	}
	for _, name := range []string{"feeds-cluster", "edge-1", "edge-2"} {
		s, ok := p.Services[name]
		if !ok {
			t.Fatalf("service %s missing from the cluster profile", name)
		}
		for _, node := range nodes {
			if !strings.Contains(envValue(s, "NATS_URL"), "nats://"+node+":4222") {
				t.Errorf("%s: NATS_URL %q does not list %s", name, envValue(s, "NATS_URL"), node)
			}
			if d, ok := s.DependsOn[node]; !ok || d.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s does not wait for %s to be healthy", name, node)
			}
		}
		if envValue(s, "LIVEPUSH_STREAM_REPLICAS") != "3" {
			t.Errorf("%s: the stream must have three replicas on the cluster", name)
		}
		if s.HealthCheck == nil || s.Restart == "" || s.Build == nil {
			t.Errorf("%s: health check %v, restart %q, built %v", name, s.HealthCheck != nil, s.Restart, s.Build != nil)
		}
	}
	for _, name := range []string{"edge-1", "edge-2"} {
		s := p.Services[name]
		if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) <= 10*time.Second {
			t.Errorf("%s: stop_grace_period must outlast the drain timeout (10s)", name)
		}
	}

	// The balancers run the repository's configurations, the files internal/proxytest starts in CI.
	balancers := []struct{ service, image, file, target string }{
		{"lb", "nginx:", "deploy/nginx/livepush.conf", "/etc/nginx/conf.d/default.conf"},
		{"lb-haproxy", "haproxy:", "deploy/haproxy/haproxy.cfg", "/usr/local/etc/haproxy/haproxy.cfg"},
	}
	published := map[string]bool{}
	for _, b := range balancers {
		lb, ok := p.Services[b.service]
		if !ok {
			t.Fatalf("no %s load balancer in the cluster profile", b.service)
		}
		if !strings.HasPrefix(lb.Image, b.image) || lb.HealthCheck == nil || lb.Restart == "" {
			t.Errorf("%s: image %q (want the official %s), health check %v, restart %q", b.service, lb.Image,
				strings.TrimSuffix(b.image, ":"), lb.HealthCheck != nil, lb.Restart)
		}
		if len(lb.Ports) != 1 || lb.Ports[0].Target != 8080 || published[lb.Ports[0].Published] {
			t.Errorf("%s: ports %+v, want one port of its own published to 8080", b.service, lb.Ports)
		} else {
			published[lb.Ports[0].Published] = true
		}
		for _, edge := range []string{"edge-1", "edge-2"} {
			if d, ok := lb.DependsOn[edge]; !ok || d.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s does not wait for %s to be healthy", b.service, edge)
			}
		}
		// A bind mount of the repository's file: Compose 1.x ignores configs outside a swarm.
		want, _ := filepath.Abs(b.file)
		if len(lb.Configs) != 0 || len(lb.Volumes) != 1 || lb.Volumes[0].Type != types.VolumeTypeBind ||
			lb.Volumes[0].Source != want || lb.Volumes[0].Target != b.target || !lb.Volumes[0].ReadOnly {
			t.Errorf("%s: configs %+v, volumes %+v; want %s bound read-only at %s", b.service, lb.Configs, lb.Volumes,
				b.file, b.target)
		}
	}
	if !published["8090"] {
		t.Error("nginx is no longer at port 8090, where the comments and docs send people")
	}
	conf, err := os.ReadFile("deploy/nginx/livepush.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"server edge-1:8080", "server edge-2:8080", "proxy_buffering off",
		"proxy_set_header Upgrade $http_upgrade", "proxy_http_version 1.1", "proxy_next_upstream"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("nginx config lacks %q:\n%s", want, conf)
		}
	}
	conf, err = os.ReadFile("deploy/haproxy/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"server edge-1 edge-1:8080", "server edge-2 edge-2:8080", "uri /readyz", "option forwardfor"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("haproxy config lacks %q:\n%s", want, conf)
		}
	}
}

// Debian's docker-compose package (Compose 1.29.2 on bookworm) runs compose.yaml too, as the README and the file's
// comments promise: `docker-compose config` accepts it, with no part ignored, on every profile. (No Docker engine
// is needed to validate.)
func TestDebianDockerComposeAcceptsTheFile(t *testing.T) {
	bin, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Fatalf("docker-compose is needed to check compose.yaml with Compose 1.x: apt-get install docker-compose (.ci/run does): %v", err)
	}
	version, _ := exec.Command(bin, "version", "--short").Output()
	t.Logf("docker-compose %s", strings.TrimSpace(string(version)))
	services := map[string][]string{
		"":        {"nats", "feeds", "push"},
		"cluster": {"nats-1", "nats-2", "nats-3", "feeds-cluster", "edge-1", "edge-2", "lb", "lb-haproxy"},
	}
	for profile, want := range services {
		args := []string{"-f", composeFile, "-p", projectName}
		if profile != "" {
			args = append(args, "--profile", profile)
		}
		var stdout, stderr strings.Builder
		cmd := exec.Command(bin, append(args, "config")...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Errorf("docker-compose %s config: %v\n%s", strings.Join(args, " "), err, stderr.String())
			continue
		}
		if strings.Contains(stderr.String(), "ignored") || strings.Contains(stderr.String(), "WARNING") {
			t.Errorf("docker-compose %s config warns:\n%s", strings.Join(args, " "), stderr.String())
		}
		for _, name := range want {
			if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(name) + `:$`).MatchString(stdout.String()) {
				t.Errorf("docker-compose %s config has no service %s:\n%s", strings.Join(args, " "), name, stdout.String())
			}
		}
	}
}
