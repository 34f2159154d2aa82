// Package cli gives every Livepush command the same configuration style: flags, each with an environment variable
// as its fallback, both listed by -help. A flag on the command line wins over the variable, the variable over the
// default.
package cli

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Flags is a flag set whose flags may take their defaults from the environment.
type Flags struct {
	*flag.FlagSet
	getenv func(string) string
	errs   []error
}

// New returns a flag set for the command name. getenv is os.Getenv in main, a map lookup in tests.
func New(name, summary string, getenv func(string) string, output io.Writer) *Flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(output)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s\n\nUsage: %s [flags]\n\nFlags (environment variable in brackets):\n", summary, name)
		fs.PrintDefaults()
	}
	return &Flags{FlagSet: fs, getenv: getenv}
}

func (f *Flags) env(name, usage string) (string, string) {
	if name == "" {
		return "", usage
	}
	return f.getenv(name), usage + " [" + name + "]"
}

// String defines a string flag with an environment fallback (env may be empty for none).
func (f *Flags) String(name, env, def, usage string) *string {
	v, usage := f.env(env, usage)
	if v != "" {
		def = v
	}
	return f.FlagSet.String(name, def, usage)
}

// Int defines an int flag with an environment fallback.
func (f *Flags) Int(name, env string, def int, usage string) *int {
	v, usage := f.env(env, usage)
	p := f.FlagSet.Int(name, def, usage)
	f.setFromEnv(name, env, v)
	return p
}

// Int64 defines an int64 flag with an environment fallback.
func (f *Flags) Int64(name, env string, def int64, usage string) *int64 {
	v, usage := f.env(env, usage)
	p := f.FlagSet.Int64(name, def, usage)
	f.setFromEnv(name, env, v)
	return p
}

// Float64 defines a float64 flag with an environment fallback.
func (f *Flags) Float64(name, env string, def float64, usage string) *float64 {
	v, usage := f.env(env, usage)
	p := f.FlagSet.Float64(name, def, usage)
	f.setFromEnv(name, env, v)
	return p
}

// Bool defines a bool flag with an environment fallback ("1", "true", …).
func (f *Flags) Bool(name, env string, def bool, usage string) *bool {
	v, usage := f.env(env, usage)
	p := f.FlagSet.Bool(name, def, usage)
	f.setFromEnv(name, env, v)
	return p
}

// Duration defines a duration flag with an environment fallback ("1h30m", "250ms").
func (f *Flags) Duration(name, env string, def time.Duration, usage string) *time.Duration {
	v, usage := f.env(env, usage)
	p := f.FlagSet.Duration(name, def, usage)
	f.setFromEnv(name, env, v)
	return p
}

// List defines a comma-separated list flag with an environment fallback; repeating the flag adds to the list.
func (f *Flags) List(name, env, usage string) *[]string {
	v, usage := f.env(env, usage)
	l := &listValue{}
	f.FlagSet.Var(l, name, usage)
	if v != "" {
		l.Set(v)
		l.fromEnv = true
	}
	return &l.items
}

// Var defines a flag of any flag.Value with an environment fallback.
func (f *Flags) Var(value flag.Value, name, env, def, usage string) {
	v, usage := f.env(env, usage)
	if err := value.Set(def); err != nil {
		panic(fmt.Sprintf("cli: default of -%s: %v", name, err))
	}
	f.FlagSet.Var(value, name, usage)
	f.setFromEnv(name, env, v)
}

func (f *Flags) setFromEnv(name, env, v string) {
	if v == "" {
		return
	}
	fl := f.Lookup(name)
	if err := fl.Value.Set(v); err != nil {
		f.errs = append(f.errs, fmt.Errorf("%s=%q: %w", env, v, err))
		return
	}
	fl.DefValue = v
}

// Parse parses args. It returns flag.ErrHelp after printing usage for -help, and an error naming the variable for
// an environment value that does not parse.
func (f *Flags) Parse(args []string) error {
	if err := f.FlagSet.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return UsageError{Err: err, printed: true} // the flag package has printed it, with the usage
	}
	if len(f.errs) > 0 {
		return UsageError{Err: errors.Join(f.errs...)}
	}
	if f.NArg() > 0 {
		return UsageError{Err: fmt.Errorf("unexpected argument %q (flags start with -)", f.Arg(0))}
	}
	return nil
}

type listValue struct {
	items   []string
	fromEnv bool
}

func (l *listValue) String() string { return strings.Join(l.items, ",") }

func (l *listValue) Set(s string) error {
	if l.fromEnv { // the command line replaces the environment's list
		l.items, l.fromEnv = nil, false
	}
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			l.items = append(l.items, item)
		}
	}
	return nil
}

// Logger returns a slog logger writing to w at level ("debug", "info", "warn", "error") in format ("text" or
// "json").
func Logger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: use text or json", format)
}

// HealthCheck gets url and returns nil if it answers 200: the health check of a container image that has no curl.
// An https URL on a loopback address is not checked against the certificate, which names the public host: the
// probe asks whether this process answers, not who it is.
func HealthCheck(rawURL string) error {
	c := http.Client{Timeout: 2 * time.Second}
	if u, err := url.Parse(rawURL); err == nil && u.Scheme == "https" && isLoopback(u.Hostname()) {
		c.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	}
	resp, err := c.Get(rawURL)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", rawURL, resp.Status)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Exit prints err the way every command does and returns the exit status: 0 for nil and -help, 2 for usage errors,
// 1 otherwise.
func Exit(name string, err error) int {
	var usage UsageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &usage):
		if !usage.printed {
			fmt.Fprintf(os.Stderr, "%s: %v\nRun '%s -help' for usage.\n", name, err, name)
		}
		return 2
	default:
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
}

// UsageError marks an error in how a command was called.
type UsageError struct {
	Err     error
	printed bool
}

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }
