package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/net/dns/dnsmessage"
)

// startServer serves name on 127.0.0.1 (HTTP, UDP and TCP echo) until the
// test ends.
func startServer(t *testing.T, name string) listeners {
	t.Helper()
	var l listeners
	var err error
	if l.http, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if l.udp, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if l.tcp, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, name, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return l
}

func TestServeAndProbe(t *testing.T) {
	t.Setenv("VERSION", "v9")
	l := startServer(t, "app")
	ln, pc := l.http, l.udp
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

func TestTCPEcho(t *testing.T) {
	l := startServer(t, "app")
	payload := make([]byte, 4<<20)
	rand.Read(payload)
	tests := []struct {
		name    string
		payload []byte
	}{
		{name: "nothing", payload: nil},
		{name: "a line", payload: []byte("hello\n")},
		{name: "4 MiB", payload: payload},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", l.tcp.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			wrote := make(chan error, 1)
			go func() {
				_, err := c.Write(tt.payload)
				if err == nil {
					err = c.(*net.TCPConn).CloseWrite()
				}
				wrote <- err
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-wrote; err != nil {
				t.Fatal(err)
			}
			want := append([]byte("app\n"), tt.payload...)
			if !bytes.Equal(got, want) {
				t.Fatalf("echoed %d bytes, want %d (the name's line, then the payload)", len(got), len(want))
			}
		})
	}
}

func TestHTTPEchoStreams(t *testing.T) {
	l := startServer(t, "app")
	url := "http://" + l.http.Addr().String() + "/echo"
	h1 := &http.Transport{}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2c := &http.Transport{Protocols: &p}
	t.Cleanup(func() { h1.CloseIdleConnections(); h2c.CloseIdleConnections() })
	tests := []struct {
		name      string
		transport *http.Transport
		wantProto string
	}{
		{name: "HTTP/1.1", transport: h1, wantProto: "HTTP/1.1"},
		{name: "h2c with prior knowledge", transport: h2c, wantProto: "HTTP/2.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			pr, pw := io.Pipe()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, pr)
			if err != nil {
				t.Fatal(err)
			}
			// The first piece goes out before the response is awaited:
			// the echo must answer while the request is still open.
			go pw.Write([]byte("ping 0\n"))
			resp, err := tt.transport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.Proto != tt.wantProto || resp.Header.Get("X-Proto") != tt.wantProto || resp.Header.Get("X-Served-By") != "app" {
				t.Fatalf("%s, X-Proto %q, X-Served-By %q; want %s from app", resp.Proto, resp.Header.Get("X-Proto"), resp.Header.Get("X-Served-By"), tt.wantProto)
			}
			r := bufio.NewReader(resp.Body)
			for i := range 3 {
				if i > 0 {
					if _, err := fmt.Fprintf(pw, "ping %d\n", i); err != nil {
						t.Fatal(err)
					}
				}
				line, err := r.ReadString('\n')
				if want := fmt.Sprintf("ping %d\n", i); err != nil || line != want {
					t.Fatalf("piece %d: %q, %v; want %q while the request is open", i, line, err, want)
				}
			}
			pw.Close()
			if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
				t.Fatalf("after the request's end: %q, %v", rest, err)
			}
		})
	}
}

func TestWebSocketEcho(t *testing.T) {
	l := startServer(t, "app")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+l.http.Addr().String()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := resp.Header.Get("X-Served-By"); got != "app" {
		t.Errorf("X-Served-By %q, want app", got)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<14)
	for _, m := range []struct {
		typ  int
		data []byte
	}{{websocket.TextMessage, []byte("hello")}, {websocket.BinaryMessage, big}} {
		if err := c.WriteMessage(m.typ, m.data); err != nil {
			t.Fatal(err)
		}
		typ, got, err := c.ReadMessage()
		if err != nil || typ != m.typ || !bytes.Equal(got, m.data) {
			t.Fatalf("echo of a %d-byte message of type %d: type %d, %d bytes, %v", len(m.data), m.typ, typ, len(got), err)
		}
	}
	resp, err = http.Get("http://" + l.http.Addr().String() + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("GET /ws without an upgrade: %s, want 400", resp.Status)
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
