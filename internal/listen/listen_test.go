package listen

import (
	"io"
	"net"
	"testing"
)

// Two listeners share one port with reusePort, and both get connections.
func TestReusePortSharesOnePort(t *testing.T) {
	a, err := TCP(t.Context(), "127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := TCP(t.Context(), a.Addr().String(), true)
	if err != nil {
		t.Fatalf("second listener on %s: %v", a.Addr(), err)
	}
	defer b.Close()
	served := map[net.Listener]int{}
	got := make(chan net.Listener, 200)
	for _, ln := range []net.Listener{a, b} {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				got <- ln
				c.Close()
			}
		}()
	}
	for range 200 {
		c, err := net.Dial("tcp", a.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(c)
		c.Close()
		served[<-got]++
	}
	if served[a] == 0 || served[b] == 0 {
		t.Errorf("connections per listener: %d and %d, want both to serve", served[a], served[b])
	}
	if _, err := TCP(t.Context(), a.Addr().String(), false); err == nil {
		t.Error("a listener without reusePort took a shared port")
	}
}
