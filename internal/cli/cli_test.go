package cli_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/livepush/livepush/internal/cli"
)

// The test binary doubles as a small command built on this package, so the tests see what a user sees: its
// standard error and its exit status.
func TestMain(m *testing.M) {
	if os.Getenv("CLI_TEST_COMMAND") == "1" {
		os.Exit(cli.Exit("demo", demo(os.Args[1:])))
	}
	os.Exit(m.Run())
}

func demo(args []string) error {
	f := cli.New("demo", "demo: a command for the tests", os.Getenv, os.Stderr)
	f.Duration("heartbeat", "DEMO_HEARTBEAT", 15*time.Second, "heartbeat interval")
	f.Int("count", "DEMO_COUNT", 3, "how many")
	f.Float64("rate", "DEMO_RATE", 1.5, "per second")
	f.Bool("verbose", "DEMO_VERBOSE", false, "say more")
	f.Secret("password", "DEMO_PASSWORD", "the password")
	f.Sensitive("url", "DEMO_URL", "", "a URL", func(s string) string { return strings.ReplaceAll(s, "hunter2", "xxxxx") })
	return f.Parse(args)
}

func runDemo(t *testing.T, env []string, args ...string) (stderr string, status int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "CLI_TEST_COMMAND=1"), env...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return string(out), exit.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

func TestABadFlagGetsOneLineAndStatus2(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"-nosuch"}, nil, "demo: flag provided but not defined: -nosuch"},
		{[]string{"-heartbeat", "5"}, nil, `demo: invalid value "5" for flag -heartbeat: a duration with a unit, such as 5s or 250ms`},
		{[]string{"-count", "many"}, nil, `demo: invalid value "many" for flag -count: a whole number, such as 64`},
		{[]string{"-rate", "fast"}, nil, `demo: invalid value "fast" for flag -rate: a number, such as 20 or 0.5`},
		{[]string{"-count", "-1"}, nil, `demo: invalid value "-1" for flag -count: not negative: a whole number, such as 64`},
		{[]string{"-rate", "-0.5"}, nil, `demo: invalid value "-0.5" for flag -rate: not negative: a number, such as 20 or 0.5`},
		{[]string{"-rate", "NaN"}, nil, `demo: invalid value "NaN" for flag -rate: a number, such as 20 or 0.5`},
		{nil, []string{"DEMO_HEARTBEAT=-5s"}, `demo: DEMO_HEARTBEAT="-5s": not negative: a duration with a unit, such as 5s or 250ms`},
		{[]string{"-verbose=maybe"}, nil, `demo: invalid boolean value "maybe" for -verbose: true or false`},
		{nil, []string{"DEMO_HEARTBEAT=5"}, `demo: DEMO_HEARTBEAT="5": a duration with a unit, such as 5s or 250ms`},
		{[]string{"stray"}, nil, `demo: unexpected argument "stray" (flags start with -)`},
	} {
		out, status := runDemo(t, c.env, c.args...)
		want := c.want + "\nRun 'demo -help' for usage.\n"
		if out != want || status != 2 {
			t.Errorf("demo %v (env %v): exit %d, printed\n%s\nwant exit 2 and\n%s", c.args, c.env, status, out, want)
		}
	}
}

func TestHelpListsFlagsAndHidesSecrets(t *testing.T) {
	out, status := runDemo(t, []string{"DEMO_PASSWORD=hunter2", "DEMO_URL=nats://u:hunter2@h:4222", "DEMO_COUNT=7"}, "-help")
	if status != 0 {
		t.Errorf("-help: exit %d", status)
	}
	for _, want := range []string{"-heartbeat duration", "(default 15s)", "-count int", "(default 7)", "-rate float",
		"-verbose\n", "-password string", "prefer DEMO_PASSWORD: flags show in process listings", "[DEMO_URL]",
		`(default "nats://u:xxxxx@h:4222")`} {
		if !strings.Contains(out, want) {
			t.Errorf("-help does not show %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hunter2") {
		t.Errorf("-help shows a secret from the environment:\n%s", out)
	}
}

func TestEnvironmentAndFlags(t *testing.T) {
	f := cli.New("demo", "", func(k string) string {
		return map[string]string{"DEMO_HEARTBEAT": "2s", "DEMO_SECRET": "s"}[k]
	}, os.Stderr)
	hb := f.Duration("heartbeat", "DEMO_HEARTBEAT", time.Second, "")
	n := f.Int("count", "DEMO_COUNT", 3, "")
	verbose := f.Bool("verbose", "", false, "")
	secret := f.Secret("secret", "DEMO_SECRET", "")
	if err := f.Parse([]string{"-count", "5", "-verbose"}); err != nil {
		t.Fatal(err)
	}
	if *hb != 2*time.Second || *n != 5 || !*verbose || *secret != "s" {
		t.Errorf("heartbeat %v count %d verbose %v secret %q", *hb, *n, *verbose, *secret)
	}
}
