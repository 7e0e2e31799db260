package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func TestServeAndProbe(t *testing.T) {
	t.Setenv("NAME", "app")
	t.Setenv("VERSION", "v9")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, pc) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	base := "http://" + ln.Addr().String()
	setReady := func(ok string) {
		t.Helper()
		resp, err := http.Post(base+"/readiness?ok="+ok, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	tests := []struct {
		name    string
		ready   string // "" leaves readiness as it is
		url     string
		want    string
		wantErr string
	}{
		{name: "info", url: base + "/", want: `"version":"v9"`},
		{name: "healthy", url: base + "/healthz", want: "ok"},
		{name: "unready", ready: "false", url: base + "/healthz", wantErr: "503"},
		{name: "ready again", ready: "true", url: base + "/healthz", want: "ok"},
		{name: "tcp", url: "tcp://" + ln.Addr().String(), want: "connected"},
		{name: "udp echo", url: "udp://" + pc.LocalAddr().String(), want: "app:ping"},
		{name: "unknown path", url: base + "/nope", wantErr: "404"},
		{name: "bad scheme", url: "ftp://x", wantErr: "want an http://"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.ready != "" {
				setReady(tt.ready)
			}
			out, err := probe(tt.url, 2*time.Second)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("probe(%s) = %q, %v; want error with %q", tt.url, out, err, tt.wantErr)
				}
				return
			}
			if err != nil || !strings.Contains(out, tt.want) {
				t.Fatalf("probe(%s) = %q, %v; want %q", tt.url, out, err, tt.want)
			}
		})
	}
}

func TestProbeUDPWithoutEcho(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := probe("udp://"+pc.LocalAddr().String(), 200*time.Millisecond); err == nil {
		t.Fatal("probe succeeded against a socket that never answers")
	}
}

// fakeDNS answers on 127.0.0.1 over UDP: svc.test. has A 10.96.0.7 (and no
// AAAA), fail.test. gets SERVFAIL, slow.test. no answer, any other name
// NXDOMAIN. It returns a resolver that sends every question there.
func fakeDNS(t *testing.T) *net.Resolver {
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
			m.Header.Response, m.Header.Authoritative, m.Header.RecursionAvailable = true, true, true
			switch q.Name.String() {
			case "svc.test.":
				if q.Type == dnsmessage.TypeA {
					m.Answers = []dnsmessage.Resource{{
						Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 5},
						Body:   &dnsmessage.AResource{A: [4]byte{10, 96, 0, 7}},
					}}
				}
			case "fail.test.":
				m.Header.RCode = dnsmessage.RCodeServerFailure
			case "slow.test.":
				continue
			default:
				m.Header.RCode = dnsmessage.RCodeNameError
			}
			b, _ := m.Pack()
			pc.WriteTo(b, from)
		}
	}()
	addr := pc.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

func TestLookup(t *testing.T) {
	r := fakeDNS(t)
	tests := []struct {
		name, host, want, wantErr string
	}{
		{name: "found", host: "svc.test.", want: "10.96.0.7"},
		{name: "not found", host: "nowhere.test.", wantErr: "nowhere.test.: not found"},
		{name: "SERVFAIL", host: "fail.test.", wantErr: "fail.test.: failed"},
		{name: "no answer", host: "slow.test.", wantErr: "slow.test.: timed out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := lookup(context.Background(), r, tt.host, 500*time.Millisecond)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("lookup(%s) = %q, %v; want error %q", tt.host, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || strings.Join(got, " ") != tt.want {
				t.Fatalf("lookup(%s) = %q, %v; want %q", tt.host, got, err, tt.want)
			}
		})
	}
}
