package push

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strings"
)

// The WebSocket origin check. Browsers do not apply the same-origin policy to WebSockets, so without it any page
// a user visits could open a socket here in the user's name (cross-site WebSocket hijacking). It matters only to
// browsers: a script or a CLI sends whatever Origin it likes, or none.
//
// A page may connect when its Origin names the host the browser asked for, or matches Config.AllowedOrigins.
// The host the browser asked for is the request's Host when the browser connects directly. Behind a proxy it is
// what the proxy says it was, so from a trusted proxy (Config.TrustedProxies), and only from one, Forwarded or
// X-Forwarded-Host and -Proto count. What a browser sends cannot fake them: a page cannot add headers to a
// WebSocket handshake, and Host is set by the browser from the URL, so the headers the proxy forwards describe
// the real request. A direct client could send any of them, which is why an untrusted peer's are ignored.
//
// The most common nginx block sets `proxy_set_header Host $host`, and $host has no port: behind nginx on :8090,
// the browser's Origin is http://localhost:8090 and the Host that arrives is "localhost". So when a trusted proxy
// forwards a host without a port, the origin's host name alone must match it (and its scheme X-Forwarded-Proto,
// when given). This admits pages served from another port of the same host name. That is a small widening:
// such pages are the same site, and browsers already share cookies across ports, so a page there could use the
// user's session anyway. A deployment that wants the exact origin forwards the port too (nginx:
// `proxy_set_header X-Forwarded-Host $http_host`), and then host and port must both match.

// originPolicy decides which pages may open WebSockets.
type originPolicy struct {
	allowed []string       // host patterns, as Config.AllowedOrigins
	trusted []netip.Prefix // proxies whose forwarded headers count
}

// newOriginPolicy takes trusted proxies as gin does: IPs or CIDRs. An entry it cannot read makes it trust none,
// as gin then does for X-Forwarded-For.
func newOriginPolicy(allowed, trustedProxies []string) originPolicy {
	p := originPolicy{allowed: allowed}
	for _, s := range trustedProxies {
		var prefix netip.Prefix
		var err error
		if strings.Contains(s, "/") {
			prefix, err = netip.ParsePrefix(s)
		} else {
			var addr netip.Addr
			if addr, err = netip.ParseAddr(s); err == nil {
				prefix = netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen())
			}
		}
		if err != nil {
			return originPolicy{allowed: allowed}
		}
		p.trusted = append(p.trusted, prefix.Masked())
	}
	return p
}

// originRefusal says why a page may not connect and what would let it.
type originRefusal struct{ message string }

func (e *originRefusal) Error() string { return e.message }

// check returns nil when r's page may open a WebSocket, or why not.
func (p originPolicy) check(r *http.Request) *originRefusal {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil // not a browser
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return &originRefusal{fmt.Sprintf("WebSocket refused: Origin %q is not a URL with a host", origin)}
	}
	if p.allows(u) {
		return nil
	}
	fwdHost, fwdProto := forwardedHostProto(r.Header)
	trusted := p.trustedPeer(r)
	if strings.EqualFold(u.Host, r.Host) {
		// The Host the browser sent, passed on as it came (directly, or by HAProxy or Caddy). An http:// page of an
		// https:// site's name and port is what a network attacker can serve, so where the browser is known to have
		// used https, such a page is refused. An https:// page cannot be forged without the site's certificate: it
		// passes even if the proxy says http (TLS ended at a load balancer in front of it).
		scheme := ""
		switch {
		case trusted && fwdProto != "":
			scheme = pageScheme(fwdProto)
		case r.TLS != nil && !trusted: // a trusted proxy may speak TLS to the edge for a site served over http
			scheme = "https"
		}
		if !strings.EqualFold(scheme, "https") || strings.EqualFold(u.Scheme, "https") {
			return nil
		}
		if !trusted { // the edge ends TLS itself
			return &originRefusal{fmt.Sprintf("WebSocket refused: Origin %q is not this site, which is served over https",
				u.Scheme+"://"+u.Host)}
		}
	} else if trusted && forwardedMatch(u, fwdHost, fwdProto, r.Host) {
		return nil
	}
	return &originRefusal{p.explain(r, u, trusted, fwdHost, fwdProto)}
}

// allows reports whether u matches one of the AllowedOrigins patterns: host patterns ("*.example.com") match the
// origin's host and port, patterns with a scheme ("https://*.example.com") the scheme too.
func (p originPolicy) allows(u *url.URL) bool {
	for _, pattern := range p.allowed {
		target := u.Host
		if strings.Contains(pattern, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, err := path.Match(strings.ToLower(pattern), strings.ToLower(target)); err == nil && ok {
			return true
		}
	}
	return false
}

func (p originPolicy) trustedPeer(r *http.Request) bool {
	if len(p.trusted) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	addr := ap.Addr().Unmap()
	for _, prefix := range p.trusted {
		if prefix.Contains(addr) {
			return true
		}
	}
	return false
}

// forwardedMatch reports whether the origin u is the public address a trusted proxy forwarded: its host
// (Forwarded's host, else X-Forwarded-Host, else Host) and, when given, its scheme. A host forwarded without a
// port matches on the name alone (see the comment at the top).
func forwardedMatch(u *url.URL, fwdHost, fwdProto, host string) bool {
	public := fwdHost
	if public == "" {
		public = host
	}
	name, port := splitHostPort(public)
	if name == "" || !strings.EqualFold(name, u.Hostname()) {
		return false
	}
	if fwdProto != "" && !strings.EqualFold(pageScheme(fwdProto), u.Scheme) {
		return false
	}
	return port == "" || port == originPort(u)
}

// forwardedHostProto returns the host and scheme the first proxy saw, from Forwarded (RFC 7239) when it is simple
// enough to read, else from X-Forwarded-Host and X-Forwarded-Proto. Of a list, the first value is the one the
// outermost proxy wrote: the host the browser asked for.
func forwardedHostProto(h http.Header) (host, proto string) {
	if v := h.Get("Forwarded"); v != "" {
		host, proto = parseForwarded(v)
	}
	if host == "" {
		host = firstValue(h.Get("X-Forwarded-Host"))
	}
	if proto == "" {
		proto = firstValue(h.Get("X-Forwarded-Proto"))
	}
	return host, proto
}

// parseForwarded reads host= and proto= of the first element of a Forwarded header. A quoted value with an
// escape, or anything else unusual, gives up on the header rather than guess.
func parseForwarded(v string) (host, proto string) {
	first := v
	if i := strings.IndexByte(v, ','); i >= 0 {
		first = v[:i]
	}
	for pair := range strings.SplitSeq(first, ";") {
		name, value, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok {
			continue
		}
		if strings.HasPrefix(value, `"`) {
			if len(value) < 2 || !strings.HasSuffix(value, `"`) || strings.ContainsAny(value[1:len(value)-1], `"\`) {
				return "", "" // an escape, or a quoted comma that split the element: not simple
			}
			value = value[1 : len(value)-1]
		}
		switch strings.ToLower(name) {
		case "host":
			host = value
		case "proto":
			proto = value
		}
	}
	return host, proto
}

func firstValue(v string) string {
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v)
}

// splitHostPort splits "host:port", "[v6]:port", "host" or "[v6]"; the port is "" when absent.
func splitHostPort(hostport string) (host, port string) {
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		return h, p
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]"), ""
}

// pageScheme maps a forwarded scheme to the scheme of a page's origin: a proxy may say ws or wss for the
// WebSocket it forwards.
func pageScheme(proto string) string {
	switch strings.ToLower(proto) {
	case "ws":
		return "http"
	case "wss":
		return "https"
	}
	return proto
}

func originPort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

// proxyHeaders lists which of the headers a proxy adds r carries, to tell an operator that a proxy is there.
func proxyHeaders(h http.Header) []string {
	var seen []string
	for _, name := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip"} {
		if h.Get(name) != "" {
			seen = append(seen, name)
		}
	}
	return seen
}

// explain says what was seen and what to configure: the 403's body and the log line are all an operator gets
// (a browser shows its page only "closed 1006").
func (p originPolicy) explain(r *http.Request, u *url.URL, trusted bool, fwdHost, fwdProto string) string {
	var b strings.Builder
	if strings.EqualFold(u.Host, r.Host) {
		fmt.Fprintf(&b, "WebSocket refused: Origin %q has Host %q but not the browser's scheme", u.Scheme+"://"+u.Host, r.Host)
	} else {
		fmt.Fprintf(&b, "WebSocket refused: Origin %q does not match Host %q", u.Scheme+"://"+u.Host, r.Host)
	}
	if fwdHost != "" {
		fmt.Fprintf(&b, ", forwarded host %q", fwdHost)
	}
	if fwdProto != "" {
		fmt.Fprintf(&b, ", forwarded proto %q", fwdProto)
	}
	peer, _, _ := net.SplitHostPort(r.RemoteAddr)
	allow := fmt.Sprintf("list it in -allowed-origins (PUSH_ALLOWED_ORIGINS), e.g. -allowed-origins %s", u.Host)
	switch via := proxyHeaders(r.Header); {
	case trusted && fwdProto != "" && !strings.EqualFold(pageScheme(fwdProto), u.Scheme):
		fmt.Fprintf(&b, ". The proxy at %s says the browser used %s but the page is %s: if it is behind another "+
			"proxy that ends TLS, pass that one's X-Forwarded-Proto on instead of setting $scheme; or %s",
			peer, fwdProto, u.Scheme, allow)
	case trusted:
		fmt.Fprintf(&b, ". If that page is this site behind the proxy at %s, have the proxy pass the host the "+
			"browser used (nginx: proxy_set_header X-Forwarded-Host $http_host; or Host $host); if it is another "+
			"site, %s", peer, allow)
	case len(via) > 0:
		fmt.Fprintf(&b, ". The request came through a proxy at %s (it sent %s) that -trusted-proxies "+
			"(PUSH_TRUSTED_PROXIES) does not list, so its forwarded headers are ignored: add %s to -trusted-proxies, "+
			"or have it pass the browser's Host with the port (nginx: proxy_set_header Host $http_host;); if the "+
			"page is another site, %s", peer, strings.Join(via, ", "), peer, allow)
	default:
		fmt.Fprintf(&b, ". Only this site's pages may open WebSockets here; to let that site's pages in, %s", allow)
	}
	return b.String()
}
