package push

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"

	"github.com/livepush/livepush/subscriber/topic"
)

// Authentication is optional. With it, a client presents a JWT (Authorization: Bearer, the token query parameter
// that EventSource needs, or the livepush_token cookie) whose "topics" claim lists the patterns it may subscribe
// to; patterns listed as anonymous need no token. A stream ends when its token expires.

var (
	// ErrUnauthorized is returned for a missing, malformed, expired or wrongly signed token.
	ErrUnauthorized = errors.New("push: unauthorized")
	// ErrForbiddenTopic is returned for a topic the token (or anonymous access) does not allow.
	ErrForbiddenTopic = errors.New("push: topic not allowed")
)

// AuthConfig enables JWT authentication. Give at least one way to verify tokens.
type AuthConfig struct {
	// HMACSecret verifies HS256 tokens.
	HMACSecret []byte
	// PublicKeys verify RS256 (RSA) and ES256 (ECDSA P-256) tokens.
	PublicKeys []any
	// JWKSURL is fetched for RS256 and ES256 keys, chosen by the token's "kid"; refreshed every 5 minutes and when
	// an unknown kid appears (at most every 10 seconds).
	JWKSURL string
	// Anonymous are patterns anyone may subscribe to without a token, such as "market.>" to open one root.
	Anonymous []string
	// Issuer and Audience, when set, must match the token's "iss" and "aud".
	Issuer, Audience string
	// RequireExpiry refuses tokens without "exp": a leaked token that never expires is a stream forever.
	RequireExpiry bool
}

// Authenticator verifies tokens and decides which topics a client may have.
type Authenticator struct {
	cfg    AuthConfig
	parser *jwt.Parser
	jwks   *jwks
}

// grant is what a request may subscribe to.
type grant struct {
	patterns []string  // from the token; nil for an anonymous client
	expires  time.Time // zero: never
	subject  string
}

// tokenClaims are the claims Livepush reads.
type tokenClaims struct {
	Topics []string `json:"topics"`
	jwt.RegisteredClaims
}

// NewAuthenticator checks cfg and returns an Authenticator for Config.Auth.
func NewAuthenticator(cfg AuthConfig) (*Authenticator, error) {
	if len(cfg.HMACSecret) == 0 && len(cfg.PublicKeys) == 0 && cfg.JWKSURL == "" {
		return nil, errors.New("push: authentication needs a secret, a public key or a JWKS URL")
	}
	for _, p := range cfg.Anonymous {
		if err := topic.ValidatePattern(p); err != nil {
			return nil, fmt.Errorf("push: anonymous pattern: %w", err)
		}
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{"HS256", "RS256", "ES256"}), jwt.WithLeeway(5 * time.Second)}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.RequireExpiry {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	a := &Authenticator{cfg: cfg, parser: jwt.NewParser(opts...)}
	if cfg.JWKSURL != "" {
		a.jwks = &jwks{url: cfg.JWKSURL, client: &http.Client{Timeout: 5 * time.Second}}
	}
	return a, nil
}

// key finds the key that verifies token, by its algorithm and kid.
func (a *Authenticator) key(token *jwt.Token) (any, error) {
	switch token.Method.Alg() {
	case "HS256":
		if len(a.cfg.HMACSecret) == 0 {
			return nil, errors.New("HS256 tokens are not accepted here")
		}
		return a.cfg.HMACSecret, nil
	}
	kid, _ := token.Header["kid"].(string)
	if a.jwks != nil && kid != "" {
		return a.jwks.key(kid)
	}
	keys := jwt.VerificationKeySet{}
	for _, k := range a.cfg.PublicKeys {
		keys.Keys = append(keys.Keys, k)
	}
	if len(keys.Keys) == 0 {
		return nil, errors.New("no public key to verify this token")
	}
	return keys, nil
}

// tokenFrom finds the request's token: the Authorization header, the token parameter, or the cookie.
func tokenFrom(r *http.Request) string {
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:]) // the scheme is case-insensitive (RFC 9110, 11.1)
	}
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	if c, err := r.Cookie("livepush_token"); err == nil {
		return c.Value
	}
	return ""
}

// authenticate returns the request's grant: an anonymous one without a token, or an error wrapping ErrUnauthorized
// for a token that does not verify.
func (a *Authenticator) authenticate(r *http.Request) (*grant, error) {
	raw := tokenFrom(r)
	if raw == "" {
		return &grant{}, nil
	}
	return a.verify(raw)
}

// verify returns the grant of a token, or an error wrapping ErrUnauthorized if it does not verify.
func (a *Authenticator) verify(raw string) (*grant, error) {
	var claims tokenClaims
	if _, err := a.parser.ParseWithClaims(raw, &claims, a.key); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrUnauthorized, tokenProblem(err))
	}
	g := &grant{patterns: []string{}, subject: claims.Subject}
	if claims.ExpiresAt != nil {
		g.expires = claims.ExpiresAt.Time
	}
	for _, p := range claims.Topics {
		if topic.ValidatePattern(p) == nil { // a pattern outside the grammar grants nothing
			g.patterns = append(g.patterns, p)
		}
	}
	return g, nil
}

// tokenProblem says what is wrong with a token without echoing it.
func tokenProblem(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "token has no expiry (exp), which this edge requires"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token not valid yet"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "token signature does not verify"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer), errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "token is for another issuer or audience"
	}
	return "invalid token"
}

// permit checks that g may subscribe to every pattern: each must be covered by a pattern of the token or by an
// anonymous one. The error wraps ErrUnauthorized when a token would help, ErrForbiddenTopic when it would not.
func (a *Authenticator) permit(g *grant, patterns []string) error {
	for _, p := range patterns {
		if coveredBy(a.cfg.Anonymous, p) || coveredBy(g.patterns, p) {
			continue
		}
		if g.patterns == nil {
			return fmt.Errorf("%w: topic %q needs a token", ErrUnauthorized, p)
		}
		return fmt.Errorf("%w: your token does not allow %q", ErrForbiddenTopic, p)
	}
	return nil
}

func coveredBy(allowed []string, p string) bool {
	for _, a := range allowed {
		if topic.Covers(a, p) {
			return true
		}
	}
	return false
}

// authorize authenticates the request and permits its patterns, or answers 401 or 403 and returns false. Without
// authentication configured it grants everything.
func (s *Server) authorize(c *gin.Context, patterns []string) (*grant, bool) {
	a := s.cfg.Auth
	if a == nil {
		return &grant{}, true
	}
	g, err := a.authenticate(c.Request)
	if err == nil {
		err = a.permit(g, patterns)
	}
	switch {
	case err == nil:
		return g, true
	case errors.Is(err, ErrForbiddenTopic):
		s.hub.metrics.refused.WithLabelValues("forbidden_topic").Inc()
		writeError(c, http.StatusForbidden, "forbidden_topic", strings.TrimPrefix(err.Error(), "push: "))
	default:
		s.hub.metrics.refused.WithLabelValues("unauthorized").Inc()
		c.Header("WWW-Authenticate", `Bearer realm="livepush"`)
		writeError(c, http.StatusUnauthorized, "unauthorized", strings.TrimPrefix(err.Error(), "push: "))
	}
	return nil, false
}

// tokenExpiry closes a subscriber when its token expires, telling the client why. A WebSocket client moves the time
// by sending a fresh token.
type tokenExpiry struct {
	mu      sync.Mutex
	sub     *Subscriber
	timer   *time.Timer // nil while the token does not expire
	stopped bool        // the subscriber is closed: nothing to arm any more
}

// closeAtExpiry returns an expiry, to start once the connection's subscriber exists, and onClose (release, stopping
// the expiry too) to give the subscriber. Without a need for one (no token that expires, none to come) the expiry is
// nil, which does nothing.
func closeAtExpiry(needed bool, release func()) (*tokenExpiry, func()) {
	if !needed {
		return nil, release
	}
	e := &tokenExpiry{}
	return e, func() {
		e.stop()
		release()
	}
}

// start closes sub at t (zero: never), unless sub has been closed already.
func (e *tokenExpiry) start(sub *Subscriber, t time.Time) {
	if e == nil {
		return
	}
	e.mu.Lock()
	e.sub = sub
	e.mu.Unlock()
	e.set(t)
}

// set closes the subscriber at t instead of the time set before; zero: never.
func (e *tokenExpiry) set(t time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	if e.stopped || e.sub == nil || t.IsZero() {
		return
	}
	sub := e.sub
	e.timer = time.AfterFunc(time.Until(t), func() { sub.Close(reasonTokenExpired) })
}

func (e *tokenExpiry) stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stopped = true
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
}

// jwks caches the keys of a JSON Web Key Set.
type jwks struct {
	url    string
	client *http.Client

	mu      sync.Mutex
	keys    map[string]any
	fetched time.Time
}

// key returns the key with kid, fetching the set when it is stale or does not know kid.
func (j *jwks) key(kid string) (any, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	k, ok := j.keys[kid]
	age := time.Since(j.fetched)
	if ok && age < 5*time.Minute {
		return k, nil
	}
	if age > 10*time.Second || !ok && j.keys == nil {
		if err := j.fetchLocked(); err != nil && !ok {
			return nil, err
		}
	}
	if k, ok := j.keys[kid]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("no key %q in the key set", kid)
}

func (j *jwks) fetchLocked() error {
	j.fetched = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	resp, err := j.client.Do(req)
	if err != nil {
		return fmt.Errorf("fetching the key set: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching the key set: %s", resp.Status)
	}
	var set struct {
		Keys []struct {
			Kid, Kty, Crv, N, E, X, Y string
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return fmt.Errorf("reading the key set: %w", err)
	}
	keys := make(map[string]any, len(set.Keys))
	for _, k := range set.Keys {
		if key, err := parseJWK(k.Kty, k.Crv, k.N, k.E, k.X, k.Y); err == nil {
			keys[k.Kid] = key
		}
	}
	j.keys = keys
	return nil
}

func parseJWK(kty, crv, n, e, x, y string) (any, error) {
	num := func(s string) (*big.Int, error) {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			return nil, err
		}
		return new(big.Int).SetBytes(b), nil
	}
	switch kty {
	case "RSA":
		nn, err1 := num(n)
		ee, err2 := num(e)
		if err := errors.Join(err1, err2); err != nil || !ee.IsInt64() {
			return nil, errors.New("bad RSA key")
		}
		return &rsa.PublicKey{N: nn, E: int(ee.Int64())}, nil
	case "EC":
		if crv != "P-256" {
			return nil, errors.New("unsupported curve")
		}
		xx, err1 := base64.RawURLEncoding.DecodeString(x)
		yy, err2 := base64.RawURLEncoding.DecodeString(y)
		if err := errors.Join(err1, err2); err != nil || len(xx) != 32 || len(yy) != 32 {
			return nil, errors.New("bad EC key")
		}
		return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, xx...), yy...))
	}
	return nil, errors.New("unsupported key type")
}

// visible reports whether g may see topic t in the catalog.
func (a *Authenticator) visible(g *grant, t string) bool {
	return a == nil || coveredBy(a.cfg.Anonymous, t) || coveredBy(g.patterns, t)
}
