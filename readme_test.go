package livepush_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The README's examples are run exactly as written, against the edge that the README's run command starts, with
// only localhost:8080 replaced by the test's address and `go run ./cmd/x` by the binary it builds. They need curl
// and wscat: a missing tool fails the test.

// buildCommands builds the repository's commands into a temporary directory.
func buildCommands(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/...")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/...: %v\n%s", err, out)
	}
	return dir
}

// startPush runs the push binary on a free loopback port, with the README's run command otherwise.
func startPush(t *testing.T, bin string, args ...string) string {
	t.Helper()
	// The edge takes a free port itself and says which in its ready file: nothing else can be answering there.
	ready := filepath.Join(t.TempDir(), "ready")
	cmd := exec.Command(filepath.Join(bin, "push"), append([]string{"-addr", "127.0.0.1:0", "-ready-file", ready,
		"-data", t.TempDir()}, args...)...)
	logPath := filepath.Join(t.TempDir(), "push.log")
	logs, _ := os.Create(logPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("push exited with %v after Ctrl-C", err)
			}
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			t.Error("push did not stop within 15s of Ctrl-C")
		}
	})
	died := func() {
		select {
		case err := <-exited:
			exited <- err
			b, _ := os.ReadFile(logPath)
			t.Fatalf("push exited at start (%v):\n%s", err, b)
		default:
		}
	}
	var addr string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		died()
		if b, err := os.ReadFile(ready); err == nil {
			for line := range strings.SplitSeq(string(b), "\n") {
				if a, ok := strings.CutPrefix(line, "addr="); ok {
					addr = a
				}
			}
		}
		if addr != "" {
			// Ready, and with a price for AAPL, which the README's examples show moving.
			if get(addr+"/readyz", "") && get(addr+"/api/snapshot?topic=market.AAPL", `"topic":"market.AAPL"`) {
				return addr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("push not ready (address %q)", addr)
		}
	}
}

// get tells whether http://url answers 200 with a body containing want.
func get(url, want string) bool {
	resp, err := http.Get("http://" + url)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == 200 && strings.Contains(string(body), want)
}

// readmeBlocks returns the README's fenced code blocks with their info strings.
func readmeBlocks(t *testing.T) (blocks []struct{ lang, body string }) {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)```([a-z]*)\n(.*?)```")
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		blocks = append(blocks, struct{ lang, body string }{m[1], m[2]})
	}
	return blocks
}

func TestReadmeExamples(t *testing.T) {
	for _, tool := range []string{"curl", "wscat", "bash", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to run the README's examples: %v (.ci/run installs it)", tool, err)
		}
	}
	bin := buildCommands(t)
	// The README's run command, and the examples at once: they must work on a fresh demo.
	addr := startPush(t, bin)

	var commands []string
	var session []string // the interactive wscat session
	assignment := regexp.MustCompile(`^[a-z_]+=\$\(`)
	for _, b := range readmeBlocks(t) {
		prelude := "" // a block's variables (cursor=$(…)), set before each of its later commands
		for _, line := range strings.Split(b.body, "\n") {
			line = strings.TrimSpace(line)
			switch {
			case b.lang == "sh" && assignment.MatchString(line):
				prelude += line + "\n"
				// The variable must get a value: an empty cursor would turn the resumes into plain subscribes.
				name := line[:strings.Index(line, "=")]
				check := strings.ReplaceAll(prelude, "localhost:8080", addr) + `printf %s "$` + name + `"`
				if out, _ := runFor(t, check, 10*time.Second); !regexp.MustCompile(`^[0-9]+$`).MatchString(out) {
					t.Errorf("%s\nsets %s to %q, want a cursor", line, name, out)
				}
			case b.lang == "sh" && (strings.HasPrefix(line, "curl ") || strings.HasPrefix(line, "wscat ") ||
				strings.HasPrefix(line, "sleep ") && strings.Contains(line, "| wscat ") ||
				strings.HasPrefix(line, "go run ./cmd/subscribe")):
				commands = append(commands, prelude+line)
			case b.lang == "" && strings.HasPrefix(b.body, "wscat -c"):
				session = append(session, line)
			}
		}
	}
	if len(commands) < 8 || len(session) < 5 {
		t.Fatalf("found %d commands and a session of %d lines in README.md; the test expects the examples", len(commands), len(session))
	}

	for _, c := range commands {
		name := c[strings.LastIndex(c, "\n")+1:]
		t.Run(name, func(t *testing.T) {
			line := strings.ReplaceAll(c, "localhost:8080", addr)
			line = strings.ReplaceAll(line, "go run ./cmd/subscribe", filepath.Join(bin, "subscribe")+" -url http://"+addr)
			// Streams run until stopped: 4s shows them live. Everything else must end by itself.
			limit := 4 * time.Second
			if !strings.HasPrefix(name, "curl -N") && !strings.HasPrefix(name, "go run") || strings.Contains(name, "-count") {
				limit = 30 * time.Second
			}
			began := time.Now()
			out, timedOut := runFor(t, line, limit)
			c := name
			switch {
			case strings.Contains(c, "$SYS"):
				if !strings.Contains(out, "400") || !strings.Contains(out, "invalid_topic") {
					t.Errorf("%s\nwant a 400 with invalid_topic, got:\n%.400s", c, out)
				}
			case strings.HasPrefix(c, "curl -N"):
				if !strings.Contains(out, "event: quote") && !strings.Contains(out, "event: score") || !timedOut {
					t.Errorf("%s\nwant a live event stream, got:\n%.400s", c, out)
				}
			case strings.HasPrefix(c, "curl"):
				if timedOut || !strings.HasPrefix(out, "{") || !strings.Contains(out, `"cursor"`) || strings.Contains(out, `"error"`) {
					t.Errorf("%s\nwant a JSON answer with a cursor, got:\n%.400s", c, out)
				}
			case strings.Contains(c, "wscat"):
				if !strings.Contains(out, `"type":"update"`) || !strings.Contains(out, `"type":"subscribed"`) {
					t.Errorf("%s\nwant subscribed and updates, got:\n%.400s", c, out)
				}
				if took := time.Since(began); timedOut || took > 8*time.Second {
					t.Errorf("%s\nran %v: want it to end by itself, as its sleep says", c, took.Round(time.Second))
				}
			case strings.Contains(c, "-count"): // the subscribe CLI stops after that many updates
				if timedOut || strings.Count(out, "\n") < 3 {
					t.Errorf("%s\nwant it to print updates and exit, got (timed out: %v):\n%.400s", c, timedOut, out)
				}
			default: // the subscribe CLI, streaming
				if !timedOut || strings.Count(out, "\n") < 10 {
					t.Errorf("%s\nwant a live stream of lines, got:\n%.400s", c, out)
				}
			}
		})
	}

	t.Run("interactive wscat session", func(t *testing.T) {
		connect := strings.ReplaceAll(session[0], "localhost:8080", addr)
		cmd := exec.Command("bash", "-c", connect)
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		before := edgeConnections(t, addr)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(stdout)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// wscat drops what is typed before it connects, and prints nothing when it does without a terminal: wait
		// for the edge to count the connection.
		for deadline := time.Now().Add(20 * time.Second); edgeConnections(t, addr) <= before; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("wscat did not connect within 20s")
			}
		}
		for _, l := range session[1:] {
			switch {
			case strings.HasPrefix(l, "> "):
				fmt.Fprintln(stdin, strings.TrimPrefix(l, "> "))
			case strings.HasPrefix(l, "< "):
				want := regexp.MustCompile(`"type":"[a-z]+"`).FindString(l)
				expectLine(t, lines, want, strings.TrimPrefix(l, "< "))
			}
		}
		stdin.Close()
	})
}

// expectLine waits for an output line containing want (a message type); for replies, the whole README line must
// be what wscat printed.
// edgeConnections is the number of connections the edge at addr holds, from its /readyz.
func edgeConnections(t *testing.T, addr string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ready struct{ Connections int }
	if err := json.NewDecoder(resp.Body).Decode(&ready); err != nil {
		t.Fatal(err)
	}
	return ready.Connections
}

func expectLine(t *testing.T, lines <-chan string, want, readme string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("wscat ended before printing %s", want)
			}
			if !strings.Contains(l, want) {
				continue
			}
			// Without a terminal wscat prints its "> " prompt before each message, instead of a "< " marker.
			got := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(l), "> "), "< ")
			if want != `"type":"update"` && got != readme {
				t.Errorf("wscat printed %s\nREADME shows  %s", l, readme)
			}
			return
		case <-timeout:
			t.Fatalf("wscat did not print %s within 10s", want)
		}
	}
}

// runFor runs a shell line for at most d, as a script would (standard input empty), and returns its standard output
// and whether it was still running at d.
func runFor(t *testing.T, line string, d time.Duration) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", line)
	cmd.WaitDelay = time.Second // a pipeline's sleep may hold the output open after bash is killed
	var out, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	timedOut := ctx.Err() != nil
	if err != nil && !timedOut {
		t.Errorf("%s: %v\n%.400s\n%.400s", line, err, out.String(), stderr.String())
	}
	return out.String(), timedOut
}

// Every flag of the binaries a user runs is in the README's configuration section.
func TestReadmeDocumentsEveryFlag(t *testing.T) {
	bin := buildCommands(t)
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	flagLine := regexp.MustCompile(`(?m)^\s+-([a-z][a-z0-9-]*)`)
	for _, name := range []string{"push", "feeds", "subscribe"} {
		out, _ := exec.Command(filepath.Join(bin, name), "-help").CombinedOutput() // -help exits 0 or 2
		flags := flagLine.FindAllStringSubmatch(string(out), -1)
		if len(flags) < 5 {
			t.Fatalf("%s -help listed %d flags:\n%s", name, len(flags), out)
		}
		for _, f := range flags {
			if !bytes.Contains(readme, []byte("`-"+f[1]+"`")) && !bytes.Contains(readme, []byte("`-"+f[1]+" ")) &&
				!bytes.Contains(readme, []byte("`-"+f[1]+",")) {
				t.Errorf("%s -%s is not in README.md", name, f[1])
			}
		}
	}
}
