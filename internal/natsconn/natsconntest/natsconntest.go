// Package natsconntest runs real nats-servers secured the ways operators secure them (users and passwords, a
// token, NKey users, operator JWTs with credentials files, TLS with a private CA and client certificates), with
// JetStream on, for tests of everything that connects to NATS. Keys and certificates are made fresh in each test.
package natsconntest

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// Auth is how clients authenticate.
type Auth int

const (
	NoAuth       Auth = iota
	UserPassword      // a user list with one user
	Token             // an authorization token
	NKey              // an NKey user
	Creds             // operator mode: an operator, an account with JetStream, a user JWT in a credentials file
)

func (a Auth) String() string {
	return [...]string{"none", "user-password", "token", "nkey", "creds"}[a]
}

// Options say how to secure a server.
type Options struct {
	Auth Auth
	// TLS serves TLS only, with a certificate for 127.0.0.1 and localhost signed by the test's CA.
	TLS bool
	// VerifyClients (with TLS) requires a client certificate signed by the test's CA.
	VerifyClients bool
	// Port to listen on. Zero: a free one.
	Port int
	// Token for Auth Token. Zero: a random one.
	Token string
}

// Server is a running secured nats-server, and what a client needs to reach it.
type Server struct {
	*server.Server
	// URL is the client URL without credentials: tls://127.0.0.1:port with TLS, nats://127.0.0.1:port without.
	URL string
	// The client's side: whichever the server's Auth needs.
	User, Password, Token string
	NKeyFile, CredsFile   string
	// The TLS files: CAFile signs the server's certificate and the client's (CertFile, KeyFile); OtherCAFile is a
	// CA the server does not know, for tests of an untrusted certificate.
	CAFile, CertFile, KeyFile, OtherCAFile string
}

// Start starts a server as o says on a free loopback port and stops it when the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	dir := t.TempDir()
	s := &Server{}
	opts := &server.Options{
		ServerName: "natsconntest-" + o.Auth.String(),
		Host:       "127.0.0.1",
		Port:       cmp.Or(o.Port, server.RANDOM_PORT),
		JetStream:  true,
		StoreDir:   filepath.Join(dir, "js"),
		NoSigs:     true,
		NoLog:      true,
	}
	switch o.Auth {
	case UserPassword:
		s.User, s.Password = "livepush", "p@ss:word/with&odd>chars"
		opts.Users = []*server.User{{Username: s.User, Password: s.Password}}
	case Token:
		s.Token = cmp.Or(o.Token, "t0ken-"+randomHex(t))
		opts.Authorization = s.Token
	case NKey:
		kp, err := nkeys.CreateUser()
		check(t, err)
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		s.NKeyFile = write(t, dir, "user.nk", seed)
		opts.Nkeys = []*server.NkeyUser{{Nkey: pub}}
	case Creds:
		s.CredsFile = operatorMode(t, opts, dir)
	}
	if o.TLS {
		pki := newPKI(t, dir)
		s.CAFile, s.CertFile, s.KeyFile, s.OtherCAFile = pki.caFile, pki.clientCert, pki.clientKey, pki.otherCAFile
		opts.TLS = true
		opts.TLSVerify = o.VerifyClients
		opts.TLSTimeout = 2
		opts.TLSConfig = pki.serverConfig(o.VerifyClients)
	}
	ns, err := server.NewServer(opts)
	check(t, err)
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		t.Fatal("natsconntest: nats-server not ready within 10s")
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	s.Server = ns
	addr := ns.Addr().(*net.TCPAddr)
	scheme := "nats"
	if o.TLS {
		scheme = "tls"
	}
	s.URL = fmt.Sprintf("%s://127.0.0.1:%d", scheme, addr.Port)
	return s
}

// operatorMode makes the server trust an operator, gives it an account with JetStream and a system account, and
// returns a credentials file for a user of that account.
func operatorMode(t testing.TB, opts *server.Options, dir string) string {
	okp, err := nkeys.CreateOperator()
	check(t, err)
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "livepush-test"
	ojwt, err := oc.Encode(okp)
	check(t, err)
	claims, err := jwt.DecodeOperatorClaims(ojwt)
	check(t, err)

	resolver := &server.MemAccResolver{}
	account := func(name string, js bool) (nkeys.KeyPair, string) {
		akp, err := nkeys.CreateAccount()
		check(t, err)
		apub, _ := akp.PublicKey()
		ac := jwt.NewAccountClaims(apub)
		ac.Name = name
		if js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		ajwt, err := ac.Encode(okp)
		check(t, err)
		check(t, resolver.Store(apub, ajwt))
		return akp, apub
	}
	_, sysPub := account("SYS", false)
	akp, _ := account("LIVEPUSH", true)

	ukp, err := nkeys.CreateUser()
	check(t, err)
	upub, _ := ukp.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.Name = "edge"
	ujwt, err := uc.Encode(akp)
	check(t, err)
	useed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(ujwt, useed)
	check(t, err)

	opts.TrustedOperators = []*jwt.OperatorClaims{claims}
	opts.AccountResolver = resolver
	opts.SystemAccount = sysPub
	return write(t, dir, "user.creds", creds)
}

type pki struct {
	ca                    *x509.Certificate
	caKey                 *ecdsa.PrivateKey
	caFile, otherCAFile   string
	serverCert            tls.Certificate
	clientCert, clientKey string
	dir                   string
}

// newPKI makes a CA, a server certificate for 127.0.0.1 and localhost, a client certificate, and a second CA that
// signs nothing the server knows.
func newPKI(t testing.TB, dir string) *pki {
	p := &pki{dir: dir}
	p.ca, p.caKey = selfSigned(t, "livepush test CA")
	p.caFile = write(t, dir, "ca.pem", certPEM(p.ca.Raw))
	other, _ := selfSigned(t, "some other CA")
	p.otherCAFile = write(t, dir, "other-ca.pem", certPEM(other.Raw))

	serverDER, serverKey := p.sign(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "nats"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.serverCert = tls.Certificate{Certificate: [][]byte{serverDER}, PrivateKey: serverKey}

	clientDER, clientKey := p.sign(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "livepush-edge"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	p.clientCert = write(t, dir, "client.pem", certPEM(clientDER))
	p.clientKey = write(t, dir, "client-key.pem", keyPEM(t, clientKey))
	return p
}

func (p *pki) serverConfig(verifyClients bool) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	cfg := &tls.Config{Certificates: []tls.Certificate{p.serverCert}, MinVersion: tls.VersionTLS12}
	if verifyClients {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = pool
	}
	return cfg
}

func (p *pki) sign(t testing.TB, tmpl *x509.Certificate) ([]byte, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(t, err)
	tmpl.SerialNumber = serial(t)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	check(t, err)
	return der, key
}

func selfSigned(t testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	check(t, err)
	cert, err := x509.ParseCertificate(der)
	check(t, err)
	return cert, key
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	check(t, err)
	return n
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func keyPEM(t testing.TB, key *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(key)
	check(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func randomHex(t testing.TB) string {
	b := make([]byte, 8)
	_, err := rand.Read(b)
	check(t, err)
	return fmt.Sprintf("%x", b)
}

func write(t testing.TB, dir, name string, data []byte) string {
	path := filepath.Join(dir, name)
	check(t, os.WriteFile(path, data, 0o600))
	return path
}

func check(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("natsconntest: %v", err)
	}
}
