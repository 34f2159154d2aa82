package subscriber_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The subscriber is a module of its own so that a program that only subscribes builds without the edge's
// dependencies. Built alone (GOWORK=off, as a user's program builds it), its packages and tests import nothing of
// the main module, and its module graph holds none of the edge's heavy dependencies.
func TestModuleLeavesTheEdgeBehind(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the module's dependencies: %v", err)
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(goTool, args...)
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	packages := run("list", "-deps", "-test", "./...")
	modules := run("mod", "graph")
	for _, heavy := range []string{"github.com/gin-gonic/gin", "github.com/nats-io/nats-server", "github.com/nats-io/nats.go",
		"github.com/compose-spec/compose-go", "github.com/tmaxmax/go-sse", "github.com/prometheus/client_golang"} {
		if strings.Contains(packages, heavy) || strings.Contains(modules, heavy) {
			t.Errorf("the subscriber module depends on %s:\npackages:\n%s\nmodule graph:\n%s", heavy, packages, modules)
		}
	}
	for p := range strings.Lines(packages) {
		if strings.HasPrefix(p, "github.com/livepush/livepush/") && !strings.HasPrefix(p, "github.com/livepush/livepush/subscriber") {
			t.Errorf("the subscriber module imports %s of the main module", strings.TrimSpace(p))
		}
	}
	if !strings.Contains(packages, "github.com/coder/websocket\n") {
		t.Errorf("go list found no coder/websocket, which the Client uses: is it listing the module?\n%s", packages)
	}
}
