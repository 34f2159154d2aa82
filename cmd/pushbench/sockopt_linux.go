package main

import "syscall"

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h): with a source address bound, leave the choice of the
// source port to connect(), which picks it per destination and may reuse a loopback port in TIME_WAIT
// (net.ipv4.tcp_tw_reuse=2, the default). Without it, bind() reserves a port for good and the ~28,000 ports of a
// source address run out with the TIME_WAIT sockets of the previous run.
const ipBindAddressNoPort = 24

func bindNoPort(_, _ string, c syscall.RawConn) error {
	var err error
	c.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	return err
}
