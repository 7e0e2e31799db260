// Package main is command dnsq, which asks one DNS server one question and prints the answer: the
// response code, then one line per record of the answer section. It is the
// test world's only DNS client on the host (there is no dig here); world.sh
// waits with it until the cluster's DNS answers. It reads no resolver
// configuration of the machine: the question goes to SERVER and nowhere else.
//
//	dnsq [-tcp] [-type A] [-timeout 2s] SERVER[:PORT] NAME
//
// Exit status: 0 when the server answered NOERROR with at least one record,
// 1 for any other answer or no answer, 2 for bad usage.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"gefyra.dev/gefyra/internal/testworld/dnsq"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dnsq", flag.ContinueOnError)
	fs.SetOutput(stderr)
	useTCP := fs.Bool("tcp", false, "ask over TCP instead of UDP")
	qtype := fs.String("type", "A", "record type: A, AAAA, CNAME, PTR, SRV, TXT, NS, SOA, MX or ANY")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: dnsq [-tcp] [-type A] [-timeout 2s] SERVER[:PORT] NAME")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return 2
	}
	server, err := dnsq.Server(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "dnsq:", err)
		return 2
	}
	t, err := dnsq.ParseType(*qtype)
	if err != nil {
		fmt.Fprintln(stderr, "dnsq:", err)
		return 2
	}
	if *timeout <= 0 {
		fmt.Fprintln(stderr, "dnsq: -timeout must be positive")
		return 2
	}
	network := "udp"
	if *useTCP {
		network = "tcp"
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	d := &net.Dialer{}
	a, err := dnsq.Ask(ctx, d.DialContext, network, server, fs.Arg(1), t)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "status: %s\n", a.Status())
	for _, r := range a.Records {
		fmt.Fprintln(stdout, r)
	}
	if a.Status() != "NOERROR" || len(a.Records) == 0 {
		return 1
	}
	return 0
}
