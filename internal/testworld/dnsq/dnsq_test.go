package dnsq

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// server is a small authoritative DNS server on 127.0.0.1, UDP and TCP on
// one port, answering from a fixed table:
//
//	svc.test.        A 10.96.0.1 (two records)
//	big.test.        truncated over UDP, the full A record over TCP
//	other.test.      first an answer with another ID, then the real one
//	silent.test.     never answered
//	anything else    NXDOMAIN
type server struct {
	addr  string
	asked chan string // "network name", one per question
}

func startServer(t *testing.T) *server {
	t.Helper()
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	for range 20 {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatalf("no free UDP+TCP port pair: %v", err)
	}
	s := &server{addr: pc.LocalAddr().String(), asked: make(chan string, 100)}
	t.Cleanup(func() { pc.Close(); ln.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			for _, out := range s.answer("udp", buf[:n]) {
				pc.WriteTo(out, from)
			}
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				b := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, b); err != nil {
					return
				}
				for _, out := range s.answer("tcp", b) {
					c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(out))))
					c.Write(out)
				}
			}()
		}
	}()
	return s
}

func (s *server) answer(network string, b []byte) [][]byte {
	var m dnsmessage.Message
	if err := m.Unpack(b); err != nil || len(m.Questions) != 1 {
		return nil
	}
	q := m.Questions[0]
	s.asked <- network + " " + q.Name.String()
	m.Header.Response, m.Header.Authoritative = true, true
	a := func(ip string) dnsmessage.Resource {
		return dnsmessage.Resource{
			Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 5},
			Body:   &dnsmessage.AResource{A: netip.MustParseAddr(ip).As4()},
		}
	}
	var out [][]byte
	switch q.Name.String() {
	case "svc.test.":
		m.Answers = []dnsmessage.Resource{a("10.96.0.1"), a("10.96.0.2")}
	case "big.test.":
		if network == "udp" {
			m.Header.Truncated = true
		} else {
			m.Answers = []dnsmessage.Resource{a("10.96.0.3")}
		}
	case "other.test.":
		other := m
		other.Header.ID++
		b, _ := other.Pack()
		out = append(out, b)
		m.Answers = []dnsmessage.Resource{a("10.96.0.4")}
	case "silent.test.":
		return nil
	default:
		m.Header.RCode = dnsmessage.RCodeNameError
	}
	b, err := m.Pack()
	if err != nil {
		return nil
	}
	return append(out, b)
}

func TestAsk(t *testing.T) {
	s := startServer(t)
	d := &net.Dialer{}
	tests := []struct {
		name      string
		network   string
		qname     string
		wantCode  string
		wantAddrs []string
		wantAsked []string
		wantErr   string
	}{
		{name: "A over udp", network: "udp", qname: "svc.test", wantCode: "NOERROR",
			wantAddrs: []string{"10.96.0.1", "10.96.0.2"}, wantAsked: []string{"udp svc.test."}},
		{name: "A over tcp", network: "tcp", qname: "svc.test.", wantCode: "NOERROR",
			wantAddrs: []string{"10.96.0.1", "10.96.0.2"}, wantAsked: []string{"tcp svc.test."}},
		{name: "truncated over udp is asked again over tcp", network: "udp", qname: "big.test", wantCode: "NOERROR",
			wantAddrs: []string{"10.96.0.3"}, wantAsked: []string{"udp big.test.", "tcp big.test."}},
		{name: "an answer with another ID is skipped", network: "udp", qname: "other.test", wantCode: "NOERROR",
			wantAddrs: []string{"10.96.0.4"}, wantAsked: []string{"udp other.test."}},
		{name: "NXDOMAIN", network: "udp", qname: "nowhere.test", wantCode: "NXDOMAIN", wantAsked: []string{"udp nowhere.test."}},
		{name: "no answer ends with ctx", network: "udp", qname: "silent.test", wantErr: "no answer", wantAsked: []string{"udp silent.test."}},
		{name: "bad network", network: "sctp", qname: "svc.test", wantErr: "want udp or tcp"},
		{name: "empty name", network: "udp", qname: "", wantErr: "empty name"},
		{name: "name too long", network: "udp", qname: strings.Repeat("a.", 200), wantErr: "name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			a, err := Ask(ctx, d.DialContext, tt.network, s.addr, tt.qname, dnsmessage.TypeA)
			var asked []string
			for len(s.asked) > 0 {
				asked = append(asked, <-s.asked)
			}
			if !slices.Equal(asked, tt.wantAsked) {
				t.Errorf("server was asked %q, want %q", asked, tt.wantAsked)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Status() != tt.wantCode || !slices.Equal(a.Addrs(), tt.wantAddrs) {
				t.Errorf("got %s %q, want %s %q", a.Status(), a.Addrs(), tt.wantCode, tt.wantAddrs)
			}
			if !a.Authoritative {
				t.Error("the AA bit was lost")
			}
		})
	}
}

func TestAskDialError(t *testing.T) {
	refuse := func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("refused by policy") }
	_, err := Ask(context.Background(), refuse, "udp", "10.96.0.10:53", "svc.test", dnsmessage.TypeA)
	if err == nil || !strings.Contains(err.Error(), "refused by policy") {
		t.Fatalf("err = %v", err)
	}
}

func TestServer(t *testing.T) {
	tests := []struct {
		name, in, want, wantErr string
	}{
		{name: "IPv4", in: "10.96.0.10", want: "10.96.0.10:53"},
		{name: "IPv4 with port", in: "127.0.0.1:5353", want: "127.0.0.1:5353"},
		{name: "IPv6", in: "::1", want: "[::1]:53"},
		{name: "bracketed IPv6", in: "[::1]", want: "[::1]:53"},
		{name: "IPv6 with port", in: "[::1]:5353", want: "[::1]:5353"},
		{name: "a name", in: "kube-dns.kube-system", wantErr: "want IP"},
		{name: "port 0", in: "10.0.0.1:0", wantErr: "port 0"},
		{name: "empty", in: "", wantErr: "want IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Server(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Server(%q) = %q, %v; want error %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Server(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseType(t *testing.T) {
	tests := []struct {
		name, in string
		want     dnsmessage.Type
		wantErr  bool
	}{
		{name: "A", in: "A", want: dnsmessage.TypeA},
		{name: "lower case", in: "srv", want: dnsmessage.TypeSRV},
		{name: "ANY", in: "any", want: dnsmessage.TypeALL},
		{name: "unknown", in: "HTTPS", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseType(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ParseType(%q) = %v, %v", tt.in, got, err)
			}
			if err == nil && TypeName(got) != strings.ToUpper(tt.in) {
				t.Errorf("TypeName(%v) = %q", got, TypeName(got))
			}
		})
	}
}

// answerFor packs an answer to q with the given id and records.
func answerFor(t testing.TB, id uint16, q dnsmessage.Question, rr ...dnsmessage.Resource) []byte {
	m := dnsmessage.Message{Header: dnsmessage.Header{ID: id, Response: true}, Questions: []dnsmessage.Question{q}, Answers: rr}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParse(t *testing.T) {
	q, err := question("svc.test", dnsmessage.TypeSRV)
	if err != nil {
		t.Fatal(err)
	}
	h := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 30}
	withType := func(t dnsmessage.Type) dnsmessage.ResourceHeader { h := h; h.Type = t; return h }
	target := dnsmessage.MustNewName("a.test.")
	good := answerFor(t, 7, q,
		dnsmessage.Resource{Header: withType(dnsmessage.TypeSRV), Body: &dnsmessage.SRVResource{Priority: 0, Weight: 100, Port: 53, Target: target}},
		dnsmessage.Resource{Header: withType(dnsmessage.TypeAAAA), Body: &dnsmessage.AAAAResource{AAAA: netip.MustParseAddr("fd00::1").As16()}},
		dnsmessage.Resource{Header: withType(dnsmessage.TypeCNAME), Body: &dnsmessage.CNAMEResource{CNAME: target}},
	)
	otherQ := q
	otherQ.Type = dnsmessage.TypeA
	tests := []struct {
		name    string
		in      []byte
		want    []string
		wantErr error
	}{
		{name: "records", in: good, want: []string{"svc.test.\t30\tSRV\t0 100 53 a.test.", "svc.test.\t30\tAAAA\tfd00::1", "svc.test.\t30\tCNAME\ta.test."}},
		{name: "another ID", in: answerFor(t, 8, q), wantErr: errNotOurs},
		{name: "another question", in: answerFor(t, 7, otherQ), wantErr: errNotOurs},
		{name: "cut short", in: good[:len(good)-3], wantErr: errors.New("malformed")},
		{name: "garbage", in: []byte{1, 2, 3}, wantErr: errors.New("malformed")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := parse(tt.in, 7, q)
			if tt.wantErr != nil {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr.Error()) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range a.Records {
				got = append(got, r.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("records %q, want %q", got, tt.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	q, err := question("svc.test", dnsmessage.TypeA)
	if err != nil {
		f.Fatal(err)
	}
	h := dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 30}
	f.Add(answerFor(f, 1, q, dnsmessage.Resource{Header: h, Body: &dnsmessage.AResource{A: [4]byte{10, 96, 0, 1}}}))
	f.Add(answerFor(f, 1, q))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parse(b, 1, q)
		if err == nil && a == nil {
			t.Fatal("no answer and no error")
		}
	})
}

func FuzzServer(f *testing.F) {
	for _, s := range []string{"10.96.0.10", "[::1]:53", "x", "1.2.3.4:99999", "[fe80::1%eth0]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := Server(s)
		if err != nil {
			return
		}
		if _, err := netip.ParseAddrPort(got); err != nil {
			t.Fatalf("Server(%q) = %q, not IP:PORT: %v", s, got, err)
		}
	})
}
