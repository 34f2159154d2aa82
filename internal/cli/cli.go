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
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Flags is a flag set whose flags may take their defaults from the environment.
type Flags struct {
	*flag.FlagSet
	getenv func(string) string
	errs   []error
	output io.Writer // where -help prints the usage
	usage  func()
}

// New returns a flag set for the command name. getenv is os.Getenv in main, a map lookup in tests.
func New(name, summary string, getenv func(string) string, output io.Writer) *Flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// The flag package prints its error and the whole usage on a bad flag: a screenful that hides the one line that
	// matters. Parse prints the usage for -help only, and Exit the error in one line.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {} // called on every error too: Parse prints the usage for -help itself
	f := &Flags{FlagSet: fs, getenv: getenv, output: output}
	f.usage = func() {
		fmt.Fprintf(output, "%s\n\nUsage: %s [flags]\n\nFlags (environment variable in brackets):\n", summary, name)
		f.printDefaults()
	}
	return f
}

// printDefaults lists the flags as flag.PrintDefaults does, with the type names of this package's values.
func (f *Flags) printDefaults() {
	f.VisitAll(func(fl *flag.Flag) {
		kind, usage := flag.UnquoteUsage(fl)
		if t, ok := fl.Value.(interface{ typeName() string }); ok && kind == "value" {
			kind = t.typeName()
		}
		line := "  -" + fl.Name
		if kind != "" {
			line += " " + kind
		}
		line += "\n    \t" + strings.ReplaceAll(usage, "\n", "\n    \t")
		if def := fl.DefValue; def != "" && def != "0" && def != "0s" && def != "false" {
			if kind == "string" {
				def = strconv.Quote(def)
			}
			line += " (default " + def + ")"
		}
		fmt.Fprintln(f.output, line)
	})
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
	return define(f, name, env, def, usage, "a whole number, such as 64", func(s string) (int, error) {
		return nonNegative(strconv.Atoi(s))
	}, strconv.Itoa)
}

// Int64 defines an int64 flag with an environment fallback.
func (f *Flags) Int64(name, env string, def int64, usage string) *int64 {
	return define(f, name, env, def, usage, "a whole number, such as 100000", func(s string) (int64, error) {
		return strconv.ParseInt(s, 10, 64)
	}, func(v int64) string { return strconv.FormatInt(v, 10) })
}

// Float64 defines a float64 flag with an environment fallback.
func (f *Flags) Float64(name, env string, def float64, usage string) *float64 {
	return define(f, name, env, def, usage, "a number, such as 20 or 0.5", func(s string) (float64, error) {
		v, err := nonNegative(strconv.ParseFloat(s, 64))
		if err == nil && (math.IsNaN(v) || math.IsInf(v, 0)) {
			return 0, errors.New("not finite")
		}
		return v, err
	}, func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) })
}

// errNegative refuses a negative count, rate or duration: none of the commands' flags has a meaning for one, and
// taking it for the default would hide a typo.
var errNegative = errors.New("negative")

func nonNegative[T int | float64 | time.Duration](v T, err error) (T, error) {
	if err == nil && v < 0 {
		return 0, errNegative
	}
	return v, err
}

// Bool defines a bool flag with an environment fallback ("1", "true", …).
func (f *Flags) Bool(name, env string, def bool, usage string) *bool {
	return define(f, name, env, def, usage, "true or false", strconv.ParseBool, strconv.FormatBool)
}

// Duration defines a duration flag with an environment fallback ("1h30m", "250ms").
func (f *Flags) Duration(name, env string, def time.Duration, usage string) *time.Duration {
	return define(f, name, env, def, usage, "a duration with a unit, such as 5s or 250ms", func(s string) (time.Duration, error) {
		return nonNegative(time.ParseDuration(s))
	}, time.Duration.String)
}

// Secret defines a string flag for a password or token, with an environment fallback. -help never shows its value,
// and its usage says to prefer the variable: a flag's value shows in process listings.
func (f *Flags) Secret(name, env, usage string) *string {
	return f.Sensitive(name, env, "", usage+" (prefer "+env+": flags show in process listings)",
		func(string) string { return "" })
}

// Sensitive defines a string flag with an environment fallback whose value -help shows only through redact, as a
// URL without its password.
func (f *Flags) Sensitive(name, env, def, usage string, redact func(string) string) *string {
	v, usage := f.env(env, usage)
	if v != "" {
		def = v
	}
	s := &sensitiveValue{value: def, redact: redact}
	f.FlagSet.Var(s, name, usage)
	return &s.value
}

type sensitiveValue struct {
	value  string
	redact func(string) string
}

func (s *sensitiveValue) Set(v string) error { s.value = v; return nil }
func (s *sensitiveValue) typeName() string   { return "string" }

func (s *sensitiveValue) String() string {
	if s == nil || s.redact == nil { // the flag package calls String on a zero value to find the default
		return ""
	}
	return s.redact(s.value)
}

// define adds a flag of type T whose parse error says what a valid value looks like (the flag package says only
// "parse error").
func define[T any](f *Flags, name, env string, def T, usage, want string, parse func(string) (T, error),
	format func(T) string) *T {
	v, usage := f.env(env, usage)
	p := &parsedValue[T]{value: def, parse: parse, format: format, want: want}
	f.FlagSet.Var(p, name, usage)
	f.setFromEnv(name, env, v)
	return &p.value
}

type parsedValue[T any] struct {
	value  T
	parse  func(string) (T, error)
	format func(T) string
	want   string
}

func (p *parsedValue[T]) Set(s string) error {
	v, err := p.parse(strings.TrimSpace(s))
	if errors.Is(err, errNegative) {
		return errors.New("not negative: " + p.want)
	}
	if err != nil {
		return errors.New(p.want)
	}
	p.value = v
	return nil
}

func (p *parsedValue[T]) String() string {
	if p == nil || p.format == nil {
		var zero T
		return fmt.Sprint(zero)
	}
	return p.format(p.value)
}

func (p *parsedValue[T]) typeName() string {
	switch any(p.value).(type) {
	case bool:
		return ""
	case time.Duration:
		return "duration"
	case float64:
		return "float"
	}
	return "int"
}

// IsBoolFlag lets a bool flag stand alone (-feeds rather than -feeds=true).
func (p *parsedValue[T]) IsBoolFlag() bool {
	_, ok := any(p.value).(bool)
	return ok
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
	fl.DefValue = fl.Value.String() // as the value shows itself: a secret stays hidden in -help
}

// Parse parses args. It returns flag.ErrHelp after printing usage for -help, a UsageError naming the flag for a
// bad one (without printing it: Exit does, in one line), and one naming the variable for an environment value that
// does not parse.
func (f *Flags) Parse(args []string) error {
	if err := f.FlagSet.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.usage()
			return err
		}
		return UsageError{Err: err}
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
		fmt.Fprintf(os.Stderr, "%s: %v\nRun '%s -help' for usage.\n", name, err, name)
		return 2
	default:
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
}

// UsageError marks an error in how a command was called.
type UsageError struct {
	Err error
}

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }
