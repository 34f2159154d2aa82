// Package proxytest runs the real reverse proxies users put in front of edges, Debian's nginx, HAProxy and Caddy,
// with the configuration files the repository ships (deploy/nginx/livepush.conf, deploy/nginx/livepush-tls.conf,
// deploy/haproxy/haproxy.cfg, deploy/caddy/Caddyfile), so that what the tests exercise is what users copy. Only the addresses change (and,
// over TLS, the certificate files): the proxy listens on loopback ports the test holds, and its upstreams are the
// addresses the test gives.
//
// Each proxy gets its own directory for its pid file, logs and temporary files, so no root paths are touched. A
// missing binary fails the test with how to install it.
//
// The proxy reaches the upstreams from 127.0.0.1: edges behind it should trust that address (push.Config
// TrustedProxies, -trusted-proxies), as a deployment trusts its proxy. nginx passes Host without the port
// ($host), so a browser page at Proxy.URL opens WebSockets only on an edge that trusts it.
package proxytest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livepush/livepush/internal/tlscert/tlscerttest"
)

// Proxy is a running nginx, HAProxy or Caddy.
type Proxy struct {
	Name string // "nginx", "nginx-tls", "haproxy" or "caddy"
	Addr string // 127.0.0.1:port, where it listens (for TLS, its HTTPS port)
	URL  string // http://127.0.0.1:port, or https://127.0.0.1:port for a proxy that serves TLS
	// Proto is what the proxy speaks to browsers on URL: "http/1.1", or "h2" (HTTP/2 over TLS, chosen by ALPN;
	// clients that do not offer it, and every WebSocket of a browser, get HTTP/1.1 on the same port).
	Proto string
	// RedirectURL is the plain-HTTP port of a TLS proxy (http://127.0.0.1:port), which sends browsers to HTTPS;
	// empty for the others.
	RedirectURL string
	// Cert is the self-signed certificate of a TLS proxy, for 127.0.0.1, ::1, localhost and *.example (the names
	// browser tests map to loopback); nil for the others. Trust it with Client, or its Pool.
	Cert *tlscerttest.Pair

	t      testing.TB
	dir    string
	config string
	cmd    *exec.Cmd
	done   chan struct{}
	err    error // how it exited, once done is closed

	mu       sync.Mutex
	serving  bool // it answered once: from then on, its exit before stop fails the test
	stopping bool
}

// Config is the configuration the proxy runs with.
func (p *Proxy) Config() string { return p.config }

// Logs returns the end of the proxy's error log (nginx) or log (HAProxy), and of its access log.
func (p *Proxy) Logs() string {
	var b strings.Builder
	for _, name := range []string{"error.log", "access.log", "output.log"} {
		data, err := os.ReadFile(filepath.Join(p.dir, name))
		if err != nil || len(data) == 0 {
			continue
		}
		if len(data) > 6000 {
			data = data[len(data)-6000:]
		}
		fmt.Fprintf(&b, "---- %s %s\n%s", p.Name, name, data)
	}
	return b.String()
}

// Client returns an HTTP client for the proxy: over TLS it trusts Cert and offers HTTP/2, as browsers do.
func (p *Proxy) Client() *http.Client {
	if p.Cert == nil {
		return &http.Client{Timeout: 10 * time.Second}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: p.Cert.Pool()},
		ForceAttemptHTTP2: true, // a Transport with its own TLS config offers only HTTP/1.1 otherwise
	}}
}

// AccessLog returns nginx's access log as it is now, whole: a line per finished request, in Debian's default
// (combined) format, whose request field ends with the protocol the client spoke ("GET /sse?… HTTP/2.0"). Empty
// for HAProxy, which logs to its output (Logs).
func (p *Proxy) AccessLog() string {
	data, _ := os.ReadFile(filepath.Join(p.dir, "access.log"))
	return string(data)
}

// Exited reports whether the proxy has stopped, and how.
func (p *Proxy) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// StartNginx runs nginx with deploy/nginx/livepush.conf in front of upstreams (host:port each), the way Debian's
// /etc/nginx/nginx.conf includes a file of conf.d, and waits until it answers.
func StartNginx(t testing.TB, upstreams ...string) *Proxy {
	t.Helper()
	file, conf := repoFile(t, "deploy/nginx/livepush.conf")
	ln, p := listen(t, "nginx")
	site, err := NginxSite(conf, ln.Addr().String(), upstreams)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	p.runNginx(file, site, ln)
	return p
}

// StartNginxTLS runs nginx with deploy/nginx/livepush-tls.conf in front of upstreams: HTTPS with HTTP/2 on
// p.URL, with a self-signed certificate made for the test (p.Cert), and on p.RedirectURL the plain-HTTP server
// that sends browsers to HTTPS. It waits until nginx answers over HTTPS.
func StartNginxTLS(t testing.TB, upstreams ...string) *Proxy {
	t.Helper()
	file, conf := repoFile(t, "deploy/nginx/livepush-tls.conf")
	ln, p := listen(t, "nginx-tls")
	plain := listenLoopback(t)
	certFile, keyFile := p.serveTLS(plain)
	site, err := NginxTLSSite(conf, plain.Addr().String(), ln.Addr().String(), certFile, keyFile, upstreams)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	p.runNginx(file, site, ln, plain)
	return p
}

// serveTLS makes p a proxy serving HTTPS with HTTP/2 on its address and redirecting plain HTTP on plain's, with a
// new self-signed certificate for 127.0.0.1, ::1, localhost and *.example, written into p's directory.
func (p *Proxy) serveTLS(plain *net.TCPListener) (certFile, keyFile string) {
	cert := tlscerttest.New(p.t, "livepush test proxy", "127.0.0.1", "::1", "localhost", "*.example")
	certFile, keyFile = filepath.Join(p.dir, "cert.pem"), filepath.Join(p.dir, "key.pem")
	cert.Write(p.t, certFile, keyFile)
	p.URL = "https://" + p.Addr
	p.Proto = "h2"
	p.RedirectURL = "http://" + plain.Addr().String()
	p.Cert = &cert
	return certFile, keyFile
}

// runNginx writes Debian's nginx.conf around site and starts nginx on the listeners, in the order of the site's
// listen directives as NginxSite and NginxTLSSite wrote them.
func (p *Proxy) runNginx(file, site string, lns ...*net.TCPListener) {
	t := p.t
	t.Helper()
	bin := binary(t, "nginx", "apt-get install nginx")
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers keep the rights to the test's directories
	}
	// Debian's nginx.conf, with its paths moved into the test's directory and conf.d's file inlined.
	p.config = fmt.Sprintf(`# generated by internal/proxytest from %[1]s
daemon off;
master_process on;
%[2]s
worker_processes 1;
pid %[3]s/nginx.pid;
error_log %[3]s/error.log info;
events { worker_connections 4096; }
http {
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    default_type application/octet-stream;
    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    access_log %[3]s/access.log;
    gzip on;
    client_body_temp_path %[3]s/body;
    proxy_temp_path %[3]s/proxy;
    fastcgi_temp_path %[3]s/fastcgi;
    uwsgi_temp_path %[3]s/uwsgi;
    scgi_temp_path %[3]s/scgi;

%[4]s
}
`, file, user, p.dir, site)
	cfg := filepath.Join(p.dir, "nginx.conf")
	writeFile(t, cfg, p.config)
	// nginx takes over the listening sockets named in $NGINX (as in its binary upgrade): the test keeps the ports
	// it was given instead of releasing them for nginx to bind.
	inherit := "NGINX="
	for i := range lns {
		inherit += fmt.Sprintf("%d;", 3+i)
	}
	p.start(lns, exec.Command(bin, "-p", p.dir, "-c", cfg, "-e", filepath.Join(p.dir, "error.log")), inherit)
}

// StartHAProxy runs HAProxy with deploy/haproxy/haproxy.cfg in front of upstreams (host:port each) and waits until
// it answers.
func StartHAProxy(t testing.TB, upstreams ...string) *Proxy {
	t.Helper()
	bin := binary(t, "haproxy", "apt-get install haproxy")
	file, conf := repoFile(t, "deploy/haproxy/haproxy.cfg")
	ln, p := listen(t, "haproxy")
	cfg, err := HAProxyConfig(conf, "fd@3", upstreams) // the socket the test holds, passed as fd 3
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	p.config = "# generated by internal/proxytest from " + file + "\n" + cfg
	path := filepath.Join(p.dir, "haproxy.cfg")
	writeFile(t, path, p.config)
	p.start([]*net.TCPListener{ln}, exec.Command(bin, "-db", "-f", path))
	return p
}

// StartCaddy runs Caddy with deploy/caddy/Caddyfile in front of upstreams: HTTPS with HTTP/2 on p.URL, with a
// self-signed certificate made for the test (p.Cert) in place of the one Caddy would get from Let's Encrypt, and on
// p.RedirectURL the plain-HTTP port where Caddy sends browsers to HTTPS. It waits until Caddy answers over HTTPS.
//
// Debian's Caddy (2.6) cannot take a listening socket from the test: it is given free ports to bind, outside the
// kernel's range of ephemeral ports, so that no connection elsewhere takes them as its own port in the moment
// between the test's check and Caddy's bind (seen in CI with a port from that range). The test's client trusts only
// the certificate made here, so no other process on those ports can pass for it.
func StartCaddy(t testing.TB, upstreams ...string) *Proxy {
	t.Helper()
	bin := binary(t, "caddy", "apt-get install caddy")
	file, conf := repoFile(t, "deploy/caddy/Caddyfile")
	ln, p := listenOn(t, "caddy", listenOutsideEphemeral(t))
	plain := listenOutsideEphemeral(t)
	certFile, keyFile := p.serveTLS(plain)
	cfg, err := CaddyConfig(conf, p.Addr, plain.Addr().String(), certFile, keyFile, upstreams)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	p.config = "# generated by internal/proxytest from " + file + "\n" + cfg
	path := filepath.Join(p.dir, "Caddyfile")
	writeFile(t, path, p.config)
	ln.Close()
	plain.Close()
	cmd := exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
	// Caddy keeps its state (autosave.json, certificates, locks) under $HOME or $XDG_*: in the test's directory.
	p.start(nil, cmd, "HOME="+p.dir, "XDG_DATA_HOME="+p.dir, "XDG_CONFIG_HOME="+p.dir)
	return p
}

// CaddyConfig rewrites a Caddyfile with one site to serve it on httpsAddr's port of 127.0.0.1 (any host name, as
// the certificate in certFile and keyFile allows) and to send plain HTTP on httpAddr's port to HTTPS; the `to` line of its upstreams
// names upstreams instead. A global options block turns off the admin endpoint (a fixed port, 2019) and sets the
// HTTP port; the file has none of its own.
func CaddyConfig(conf, httpsAddr, httpAddr, certFile, keyFile string, upstreams []string) (string, error) {
	if len(upstreams) == 0 {
		return "", errors.New("no upstream")
	}
	if caddyGlobal.MatchString(conf) {
		return "", errors.New("a global options block: the test writes its own")
	}
	if n := len(caddySite.FindAllString(conf, -1)); n != 1 {
		return "", fmt.Errorf("%d site blocks, want 1", n)
	}
	if n := len(caddyTo.FindAllString(conf, -1)); n != 1 {
		return "", fmt.Errorf("%d `to` lines, want 1", n)
	}
	_, httpsPort, _ := net.SplitHostPort(httpsAddr)
	_, httpPort, _ := net.SplitHostPort(httpAddr)
	conf = caddySite.ReplaceAllString(conf, "https://:"+httpsPort+" {\n\tbind 127.0.0.1\n\ttls "+certFile+" "+keyFile+"\n")
	conf = caddyTo.ReplaceAllString(conf, "${1}to "+strings.Join(upstreams, " "))
	return "{\n\tadmin off\n\thttp_port " + httpPort + "\n\thttps_port " + httpsPort + "\n}\n\n" + conf, nil
}

var (
	caddyGlobal = regexp.MustCompile(`(?m)^\{`)
	caddySite   = regexp.MustCompile(`(?m)^[^\s#({][^\n]*\{[ \t]*\n`)
	caddyTo     = regexp.MustCompile(`(?m)^([ \t]*)to[ \t]+[^\n]+`)
)

var (
	nginxServer  = regexp.MustCompile(`(?m)^([ \t]*)server[ \t]+(\S+)([^;\n]*);[^\n]*\n`)
	nginxListen  = regexp.MustCompile(`(?m)^([ \t]*)listen[ \t]+\S+?([ \t][^;\n]*)?;`)
	nginxCert    = regexp.MustCompile(`(?m)^([ \t]*)ssl_certificate[ \t]+[^;\n]+;`)
	nginxCertKey = regexp.MustCompile(`(?m)^([ \t]*)ssl_certificate_key[ \t]+[^;\n]+;`)
	haproxyBind  = regexp.MustCompile(`(?m)^([ \t]*)bind[ \t]+\S+`)
	haproxySrv   = regexp.MustCompile(`(?m)^([ \t]*)server[ \t]+(\S+)[ \t]+\S+([^\n]*)\n`)
)

// NginxSite rewrites an nginx site file to listen on listenAddr and proxy to upstreams: the server lines of its
// upstream block become one per address, with the parameters of the first (max_fails, …).
func NginxSite(conf, listenAddr string, upstreams []string) (string, error) {
	if n := len(nginxListen.FindAllString(conf, -1)); n != 1 {
		return "", fmt.Errorf("%d listen directives, want 1", n)
	}
	conf = nginxListen.ReplaceAllString(conf, "${1}listen "+listenAddr+";")
	return nginxUpstreams(conf, upstreams)
}

// NginxTLSSite rewrites an nginx site file with a plain-HTTP server and a TLS one: the listen directive with ssl
// moves to tlsAddr, keeping its parameters (ssl http2), the other to plainAddr; ssl_certificate and
// ssl_certificate_key name certFile and keyFile; the upstream block is rewritten as NginxSite does.
func NginxTLSSite(conf, plainAddr, tlsAddr, certFile, keyFile string, upstreams []string) (string, error) {
	var plain, secure int
	var rewriteErr error
	conf = nginxListen.ReplaceAllStringFunc(conf, func(line string) string {
		m := nginxListen.FindStringSubmatch(line)
		indent, params := m[1], m[2]
		if slices.Contains(strings.Fields(params), "ssl") {
			secure++
			return indent + "listen " + tlsAddr + params + ";"
		}
		if strings.TrimSpace(params) != "" {
			rewriteErr = fmt.Errorf("plain listen directive with parameters: %q", line)
		}
		plain++
		return indent + "listen " + plainAddr + ";"
	})
	if rewriteErr != nil {
		return "", rewriteErr
	}
	if plain != 1 || secure != 1 {
		return "", fmt.Errorf("%d listen directives with ssl and %d without, want 1 of each", secure, plain)
	}
	for _, d := range []struct {
		re   *regexp.Regexp
		name string
		file string
	}{{nginxCert, "ssl_certificate", certFile}, {nginxCertKey, "ssl_certificate_key", keyFile}} {
		if n := len(d.re.FindAllString(conf, -1)); n != 1 {
			return "", fmt.Errorf("%d %s directives, want 1", n, d.name)
		}
		conf = d.re.ReplaceAllStringFunc(conf, func(line string) string {
			return d.re.FindStringSubmatch(line)[1] + d.name + " " + d.file + ";"
		})
	}
	return nginxUpstreams(conf, upstreams)
}

// nginxUpstreams makes the server lines of the upstream block one per address, with the parameters of the first.
func nginxUpstreams(conf string, upstreams []string) (string, error) {
	return replaceServers(conf, nginxServer, upstreams, func(indent, _, params string, _ int, addr string) string {
		return fmt.Sprintf("%sserver %s%s;\n", indent, addr, params)
	})
}

// HAProxyConfig rewrites an HAProxy configuration to bind bind and send to upstreams: the server lines of each
// backend become one per address, named edge-1, edge-2, …, with the parameters of the first (check; a track
// naming the first server names the same one's counterpart).
func HAProxyConfig(conf, bind string, upstreams []string) (string, error) {
	if n := len(haproxyBind.FindAllString(conf, -1)); n != 1 {
		return "", fmt.Errorf("%d bind lines, want 1", n)
	}
	conf = haproxyBind.ReplaceAllString(conf, "${1}bind "+bind)
	return replaceServers(conf, haproxySrv, upstreams, func(indent, first, params string, i int, addr string) string {
		name := fmt.Sprintf("edge-%d", i+1)
		return fmt.Sprintf("%sserver %s %s%s\n", indent, name, addr, strings.ReplaceAll(params, "/"+first, "/"+name))
	})
}

// replaceServers replaces each run of consecutive server lines matched by re (groups: indent, name, parameters)
// with one line per upstream, made by line from the run's first line.
func replaceServers(conf string, re *regexp.Regexp, upstreams []string,
	line func(indent, firstName, params string, i int, addr string) string) (string, error) {
	if len(upstreams) == 0 {
		return "", errors.New("no upstream")
	}
	matches := re.FindAllStringSubmatchIndex(conf, -1)
	if len(matches) == 0 {
		return "", errors.New("no server line")
	}
	var out strings.Builder
	done := 0
	for i := 0; i < len(matches); {
		first := matches[i]
		end := first[1]
		for i++; i < len(matches) && matches[i][0] == end; i++ {
			end = matches[i][1]
		}
		out.WriteString(conf[done:first[0]])
		indent, name, params := conf[first[2]:first[3]], conf[first[4]:first[5]], conf[first[6]:first[7]]
		for j, addr := range upstreams {
			out.WriteString(line(indent, name, params, j, addr))
		}
		done = end
	}
	out.WriteString(conf[done:])
	return out.String(), nil
}

func binary(t testing.TB, name, install string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	p := "/usr/sbin/" + name // not on a non-root user's PATH on Debian
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s not found on PATH or in /usr/sbin: install it (Debian: `%s`; .ci/run does)", name, install)
	}
	return p
}

// repoFile reads a file by its path from the repository's root, found as the directory of go.mod above the
// test's working directory.
func repoFile(t testing.TB, rel string) (string, string) {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod above the working directory: cannot find %s", rel)
		}
		dir = parent
	}
	data, err := os.ReadFile(filepath.Join(dir, rel))
	if err != nil {
		t.Fatal(err)
	}
	return rel, string(data)
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// listen takes a free loopback port for the proxy, held from now on.
func listen(t testing.TB, name string) (*net.TCPListener, *Proxy) {
	t.Helper()
	return listenOn(t, name, listenLoopback(t))
}

// listenOn makes the proxy that will listen on ln.
func listenOn(t testing.TB, name string, ln *net.TCPListener) (*net.TCPListener, *Proxy) {
	t.Helper()
	dir, err := os.MkdirTemp("", "livepush-"+name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	addr := ln.Addr().String()
	return ln, &Proxy{Name: name, Addr: addr, URL: "http://" + addr, Proto: "http/1.1", t: t, dir: dir, done: make(chan struct{})}
}

// listenOutsideEphemeral takes a free loopback port below the kernel's ephemeral range (or above it, if the range
// starts low), which no outgoing connection is given as its own.
func listenOutsideEphemeral(t testing.TB) *net.TCPListener {
	t.Helper()
	lo, hi := 32768, 60999 // Linux's default
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &lo, &hi)
	}
	from, to := 10000, lo // ports to choose from: [from, to)
	if lo-from < 5000 {
		from, to = hi+1, 65536
	}
	for range 200 {
		port := from + rand.IntN(max(to-from, 1))
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		if err == nil {
			return ln
		}
	}
	t.Fatalf("no free loopback port in [%d, %d)", from, to)
	return nil
}

// listenLoopback takes a free loopback port.
func listenLoopback(t testing.TB) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// start runs cmd with lns as its fds 3, 4, …, stops it when the test ends, fails the test if it dies before, and
// waits until it answers on p.URL.
func (p *Proxy) start(lns []*net.TCPListener, cmd *exec.Cmd, env ...string) {
	t := p.t
	t.Helper()
	var files []*os.File
	for _, ln := range lns {
		f, err := ln.File()
		ln.Close() // the proxy holds the socket through f's descriptor
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	out, err := os.Create(filepath.Join(p.dir, "output.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = files
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its workers go with it
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("start %s: %v", p.Name, err)
	}
	p.cmd = cmd
	go func() {
		p.err = cmd.Wait()
		out.Close()
		p.mu.Lock()
		unexpected := p.serving && !p.stopping
		p.mu.Unlock()
		if unexpected {
			t.Errorf("%s exited while the test ran (%v)\n%s", p.Name, p.err, p.Logs())
		}
		close(p.done)
	}()
	t.Cleanup(p.stop)
	p.waitServing()
}

// waitServing waits until the proxy answers a request, whatever the answer: upstreams may not be up yet. Over
// TLS, a handshake with the test's certificate is enough (Caddy holds a request up to 5s while no upstream is up).
func (p *Proxy) waitServing() {
	t := p.t
	t.Helper()
	client := p.Client()
	client.Timeout = time.Second
	defer client.CloseIdleConnections()
	answers := func() error {
		if p.Cert != nil {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", p.Addr, &tls.Config{RootCAs: p.Cert.Pool()})
			if err == nil {
				c.Close()
			}
			return err
		}
		resp, err := client.Get(p.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		err := answers()
		if err == nil {
			p.mu.Lock()
			p.serving = true
			p.mu.Unlock()
			return
		}
		if exited, how := p.Exited(); exited {
			t.Fatalf("%s exited at start (%v)\n%s\n---- config\n%s", p.Name, how, p.Logs(), p.config)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer on %s: %v\n%s", p.Name, p.Addr, err, p.Logs())
		}
	}
}

// stop ends the proxy: SIGTERM (nginx's master stops its workers; HAProxy stops at once), then SIGKILL to the
// process group if it lingers.
func (p *Proxy) stop() {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}
