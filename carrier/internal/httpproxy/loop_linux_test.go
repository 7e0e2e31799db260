package httpproxy_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"gefyra.dev/gefyra/carrier/internal/config"
	"gefyra.dev/gefyra/carrier/internal/httpproxy"
	"gefyra.dev/gefyra/internal/netio"
)

// These tests run on the event loop where there is one (Linux, two Ps or
// more; `make test` runs them again with it off) and say which path they
// took through LoopIdle.

// loopProxy serves a listener whose every request goes to backend (see
// toBackend), after edit has changed it; it returns the Proxy, for the
// test to look at, and the listener's address.
func loopProxy(t *testing.T, backend string, edit func(*config.Listener)) (*httpproxy.Proxy, string) {
	t.Helper()
	r := newRig(t, nil, edit, toBackend(backend)...)
	return r.p, r.addr
}

// route is the listener's one route.
func route(l *config.Listener) *config.Route { return l.HTTP.Routes.VirtualHosts[0].Routes[0] }

// echo answers with the request's method and target, and its body.
func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.RequestURI(), b)
}

// exchange writes req on c and reads one response.
func exchange(t *testing.T, c net.Conn, br *bufio.Reader, req string) (*http.Response, string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	return readResponse(t, br, req)
}

func readResponse(t *testing.T, br *bufio.Reader, req string) (*http.Response, string) {
	t.Helper()
	method := strings.SplitN(req, " ", 2)[0]
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("response to %.40q: %v", req, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("body of the response to %.40q: %v", req, err)
	}
	return resp, string(b)
}

func TestLoopPipelinedRequests(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(echo))
	defer be.Close()
	p, addr := loopProxy(t, be.Listener.Addr().String(), nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Five requests in one write, one with a small body: the answers come
	// in order, each whole.
	var reqs []string
	for i := range 5 {
		if i == 2 {
			reqs = append(reqs, "POST /p2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
			continue
		}
		reqs = append(reqs, fmt.Sprintf("GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n", i))
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, strings.Join(reqs, "")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i, req := range reqs {
		resp, body := readResponse(t, br, req)
		want := fmt.Sprintf("GET /p%d ", i)
		if i == 2 {
			want = "POST /p2 hello"
		}
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("request %d: %d %q, want %q", i, resp.StatusCode, body, want)
		}
	}
	if n := httpproxy.LoopIdle(p); n == 0 {
		t.Fatal("no idle upstream connection on the loop: the requests did not go through it")
	} else if n < 0 && netio.Shared() != nil {
		t.Fatal("LoopIdle says there is no loop")
	}
}

// TestLoopHandsOff: what the loop does not serve itself goes to the
// goroutine path, before the request is sent or while its response is
// read, and the connection goes on serving there.
func TestLoopHandsOff(t *testing.T) {
	// Heads of 20 KiB, in fields of 4 KiB (a line must fit the goroutine
	// path's 16 KiB buffer).
	big := strings.Repeat("v", 4<<10)
	bigFields := strings.Repeat("X-Big: "+big+"\r\n", 5)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/chunked":
			for i := range 3 {
				fmt.Fprintf(w, "part %d;", i)
				w.(http.Flusher).Flush()
			}
			return
		case "/bighead":
			for range 5 {
				w.Header().Add("X-Big", big)
			}
		case "/early":
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
		case "/close":
			// No Content-Length: the body runs until the server closes.
			c, bw, _ := w.(http.Hijacker).Hijack()
			bw.WriteString("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close")
			bw.Flush()
			c.Close()
			return
		}
		fmt.Fprintf(w, "%s %s %d %d", r.Method, r.URL.Path, len(b), len(strings.Join(r.Header["X-Big"], "")))
	}))
	defer be.Close()
	_, addr := loopProxy(t, be.Listener.Addr().String(), nil)
	body := strings.Repeat("b", 12<<10)
	tests := []struct {
		name, req, want string
		closes          bool
	}{
		{"chunked response", "GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n", "part 0;part 1;part 2;", false},
		{"response head over the buffer", "GET /bighead HTTP/1.1\r\nHost: x\r\n\r\n", "GET /bighead 0 0", false},
		{"interim response", "GET /early HTTP/1.1\r\nHost: x\r\n\r\n", "GET /early 0 0", false},
		{"body until close", "GET /close HTTP/1.1\r\nHost: x\r\n\r\n", "until close", true},
		{"request head over the buffer", "GET /h HTTP/1.1\r\nHost: x\r\n" + bigFields + "\r\n", fmt.Sprintf("GET /h 0 %d", 5*len(big)), false},
		{"chunked request", "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "POST /c 5 0", false},
		{"large request body", fmt.Sprintf("POST /l HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body), fmt.Sprintf("POST /l %d 0", len(body)), false},
		{"HTTP/1.0", "GET /old HTTP/1.0\r\nHost: x\r\n\r\n", "GET /old 0 0", true},
		{"expect", "POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi", "POST /e 2 0", false},
		{"malformed", "GET /x HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n", "carrier: malformed header field\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			if _, got := exchange(t, c, br, "GET /before HTTP/1.1\r\nHost: x\r\n\r\n"); got != "GET /before 0 0" {
				t.Fatalf("before: %q", got)
			}
			resp, got := exchange(t, c, br, tt.req)
			for resp.StatusCode < 200 { // 100 Continue, 103 Early Hints
				resp, got = readResponse(t, br, tt.req)
			}
			if got != tt.want {
				t.Fatalf("%d %q, want %q", resp.StatusCode, got, tt.want)
			}
			if tt.closes {
				if _, err := br.ReadByte(); err != io.EOF {
					t.Fatalf("the connection stays open after a response that closes it (%v)", err)
				}
				return
			}
			if _, got := exchange(t, c, br, "GET /after HTTP/1.1\r\nHost: x\r\n\r\n"); got != "GET /after 0 0" {
				t.Fatalf("after: %q", got)
			}
		})
	}
}

// TestLoopLargeResponseToASlowReader: a body many times the buffers,
// read slowly, arrives whole, and the connection serves the next request.
func TestLoopLargeResponseToASlowReader(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 512<<10) // 8 MiB
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(payload)))
		w.Write(payload)
	}))
	defer be.Close()
	_, addr := loopProxy(t, be.Listener.Addr().String(), nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	for range 2 {
		io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // the socket buffers fill up meanwhile
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		if err != nil || n != int64(len(payload)) {
			t.Fatalf("read %d of %d bytes: %v", n, len(payload), err)
		}
		if want := sha256.Sum256(payload); !bytes.Equal(h.Sum(nil), want[:]) {
			t.Fatal("the body changed on the way")
		}
	}
}

// slowBackend answers "ok", to /slow only once the test ends.
func slowBackend(t *testing.T) *httptest.Server {
	release := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(func() {
		close(release)
		be.Close()
	})
	return be
}

// TestLoopTimeouts: the route timeout answers 504, the idle timeout
// closes a connection at rest, and both come on time.
func TestLoopTimeouts(t *testing.T) {
	be := slowBackend(t)
	_, addr := loopProxy(t, be.Listener.Addr().String(), func(l *config.Listener) {
		route(l).Timeout = 300 * time.Millisecond
		l.HTTP.IdleTimeout = 400 * time.Millisecond
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	if _, got := exchange(t, c, br, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"); got != "ok" {
		t.Fatalf("fast: %q", got)
	}
	start := time.Now()
	resp, got := exchange(t, c, br, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	took := time.Since(start)
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(got, "timed out") {
		t.Fatalf("slow: %d %q", resp.StatusCode, got)
	}
	if took < 250*time.Millisecond || took > 3*time.Second {
		t.Fatalf("the 504 came after %v; the route timeout is 300ms", took)
	}
	// The connection is still good, then closes once idle for 400ms.
	if _, got := exchange(t, c, br, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"); got != "ok" {
		t.Fatalf("after the timeout: %q", got)
	}
	start = time.Now()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: %v, want EOF", err)
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 3*time.Second {
		t.Fatalf("the idle connection closed after %v; the idle timeout is 400ms", took)
	}
}

// TestLoopEndsWithItsContext: connections close when ServeConn's context
// ends, also one waiting for a response.
func TestLoopEndsWithItsContext(t *testing.T) {
	be := slowBackend(t)
	r := newRig(t, nil, nil, toBackend(be.Listener.Addr().String())...)
	idle, ibr := r.dial(t)
	exchange(t, idle, ibr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	waiting, _ := r.dial(t)
	io.WriteString(waiting, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(100 * time.Millisecond)
	r.cancel()
	for _, c := range []net.Conn{idle, waiting} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("read %d bytes after the context ended", n)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("the connection stays open after the context ended")
		}
	}
	r.waitServed(t, 5*time.Second)
}
