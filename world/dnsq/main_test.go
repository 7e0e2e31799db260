package main

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// serve answers every UDP question on 127.0.0.1 once: svc.test. with an A
// record, anything else with NXDOMAIN.
func serve(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var m dnsmessage.Message
			if m.Unpack(buf[:n]) != nil || len(m.Questions) != 1 {
				continue
			}
			q := m.Questions[0]
			m.Header.Response = true
			if q.Name.String() == "svc.test." {
				m.Answers = []dnsmessage.Resource{{
					Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 5},
					Body:   &dnsmessage.AResource{A: netip.MustParseAddr("10.96.0.1").As4()},
				}}
			} else {
				m.Header.RCode = dnsmessage.RCodeNameError
			}
			b, _ := m.Pack()
			pc.WriteTo(b, from)
		}
	}()
	return pc.LocalAddr().String()
}

func TestRun(t *testing.T) {
	addr := serve(t)
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantOut    string
		wantErrOut string
	}{
		{name: "answer", args: []string{addr, "svc.test"}, wantCode: 0, wantOut: "status: NOERROR\nsvc.test.\t5\tA\t10.96.0.1\n"},
		{name: "NXDOMAIN", args: []string{addr, "nowhere.test"}, wantCode: 1, wantOut: "status: NXDOMAIN\n"},
		{name: "no answer", args: []string{"-timeout", "200ms", silent.LocalAddr().String(), "svc.test"}, wantCode: 1, wantErrOut: "no answer"},
		{name: "missing name", args: []string{addr}, wantCode: 2, wantErrOut: "usage"},
		{name: "server by name", args: []string{"localhost", "svc.test"}, wantCode: 2, wantErrOut: "want IP"},
		{name: "bad type", args: []string{"-type", "BOGUS", addr, "svc.test"}, wantCode: 2, wantErrOut: "unknown record type"},
		{name: "bad timeout", args: []string{"-timeout", "0s", addr, "svc.test"}, wantCode: 2, wantErrOut: "positive"},
		{name: "unknown flag", args: []string{"-x", addr, "svc.test"}, wantCode: 2, wantErrOut: "not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(tt.args, &out, &errOut)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d (stderr %q)", code, tt.wantCode, errOut.String())
			}
			if tt.wantOut != "" && out.String() != tt.wantOut {
				t.Errorf("stdout %q, want %q", out.String(), tt.wantOut)
			}
			if !strings.Contains(errOut.String(), tt.wantErrOut) {
				t.Errorf("stderr %q, want %q in it", errOut.String(), tt.wantErrOut)
			}
		})
	}
}
