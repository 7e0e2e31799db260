package httpproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func parseReq(s string) (*message, error) {
	m := &message{}
	return m, m.readRequest(bufio.NewReaderSize(strings.NewReader(s), 4096))
}

func TestReadRequest(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		status  int // 0: parses
		check   func(*message) bool
		explain string
	}{
		{name: "simple", in: "GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n", check: func(m *message) bool {
			return string(m.Method()) == "GET" && string(m.Path()) == "/a?b=c" && string(m.Host()) == "x" && m.contentLength == -1
		}},
		{name: "bare LF line ends", in: "GET / HTTP/1.1\nHost: x\n\n", check: func(m *message) bool { return string(m.Host()) == "x" }},
		{name: "leading empty line", in: "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", check: func(m *message) bool { return string(m.Method()) == "GET" }},
		{name: "HTTP/1.0 without Host", in: "GET / HTTP/1.0\r\n\r\n", check: func(m *message) bool { return m.minor == 0 }},
		{name: "OWS trimmed", in: "GET / HTTP/1.1\r\nHost:   x \t\r\nX-A:\tv w \r\n\r\n", check: func(m *message) bool {
			v, _ := m.Header("x-a")
			return string(m.Host()) == "x" && string(v) == "v w"
		}},
		{name: "content length", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n", check: func(m *message) bool { return m.contentLength == 12 }},
		{name: "same content length twice", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", check: func(m *message) bool { return m.contentLength == 3 }},
		{name: "chunked", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n", check: func(m *message) bool { return m.chunked }},
		{name: "connection tokens", in: "GET / HTTP/1.1\r\nHost: x\r\nConnection: close, X-Foo\r\nX-Foo: 1\r\n\r\n", check: func(m *message) bool {
			return m.connClose && m.hopByHop([]byte("x-FOO"), true) && !m.hopByHop([]byte("x-bar"), true)
		}},
		{name: "websocket upgrade", in: "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", check: func(m *message) bool { return m.isUpgrade() }},
		{name: "h2c upgrade is declined", in: "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AA\r\n\r\n", check: func(m *message) bool {
			return !m.isUpgrade() && m.hopByHop([]byte("HTTP2-Settings"), true)
		}},
		{name: "absolute form", in: "GET http://svc:8080/p?q HTTP/1.1\r\nHost: svc:8080\r\n\r\n", check: func(m *message) bool { return string(m.Path()) == "/p?q" }},
		{name: "repeated header joined", in: "GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nA: 2\r\n\r\n", check: func(m *message) bool {
			v, ok := m.Header("a")
			return ok && string(v) == "1,2"
		}},
		{name: "expect 100-continue", in: "PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n", check: func(m *message) bool { return m.expect100 }},
		{name: "smuggling: CL and TE", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", status: 400},
		{name: "smuggling: two lengths", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", status: 400},
		{name: "smuggling: signed length", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n", status: 400},
		{name: "smuggling: gzip, chunked", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", status: 501},
		{name: "space before colon", in: "GET / HTTP/1.1\r\nHost : x\r\n\r\n", status: 400},
		{name: "obs-fold", in: "GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\n 2\r\n\r\n", status: 400},
		{name: "two hosts", in: "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", status: 400},
		{name: "no host", in: "GET / HTTP/1.1\r\n\r\n", status: 400},
		{name: "HTTP/2 version", in: "GET / HTTP/2.0\r\n\r\n", status: 505},
		{name: "bad method", in: "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", status: 400},
		{name: "NUL in value", in: "GET / HTTP/1.1\r\nHost: x\r\nA: a\x00b\r\n\r\n", status: 400},
		{name: "unknown expectation", in: "GET / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n", status: 417},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parseReq(tt.in)
			if tt.status != 0 {
				var pe *protoError
				if !errors.As(err, &pe) || pe.Status != tt.status {
					t.Fatalf("got %v, want status %d", err, tt.status)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(m) {
				t.Fatalf("parsed wrongly: %+v", m)
			}
		})
	}
}

func TestHeadLimits(t *testing.T) {
	long := "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("p", 1000)+"\r\n", 70) + "\r\n"
	m := &message{}
	if err := m.readRequest(bufio.NewReaderSize(strings.NewReader(long), 16<<10)); !errors.Is(err, errHeadTooLarge) {
		t.Fatalf("70 KB head: %v", err)
	}
	many := "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("A: 1\r\n", maxHeaders+1) + "\r\n"
	if err := m.readRequest(bufio.NewReaderSize(strings.NewReader(many), 16<<10)); !errors.Is(err, errTooMany) {
		t.Fatalf("too many fields: %v", err)
	}
	line := "GET /" + strings.Repeat("a", 20<<10) + " HTTP/1.1\r\n\r\n"
	if err := m.readRequest(bufio.NewReaderSize(strings.NewReader(line), 16<<10)); !errors.Is(err, errHeadTooLarge) {
		t.Fatalf("20 KB request line: %v", err)
	}
}

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{name: "ok", in: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ok: true},
		{name: "no reason", in: "HTTP/1.1 204\r\n\r\n", ok: true},
		{name: "1.0", in: "HTTP/1.0 200 OK\r\n\r\n", ok: true},
		{name: "not http", in: "SSH-2.0-x\r\n\r\n"},
		{name: "two digit status", in: "HTTP/1.1 20 OK\r\n\r\n"},
		{name: "letters in status", in: "HTTP/1.1 2x0 OK\r\n\r\n"},
		{name: "bad header", in: "HTTP/1.1 200 OK\r\nBad Header: 1\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &message{}
			err := m.readResponse(bufio.NewReader(strings.NewReader(tt.in)))
			if (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// serialize writes a parsed request head back out, as the proxy does
// (without its own additions).
func serialize(m *message) string {
	var b bytes.Buffer
	b.Write(m.b(m.method))
	b.WriteByte(' ')
	b.Write(m.b(m.target))
	if m.minor == 0 {
		b.WriteString(" HTTP/1.0\r\n")
	} else {
		b.WriteString(" HTTP/1.1\r\n")
	}
	for _, f := range m.fields {
		b.Write(m.b(f.name))
		b.WriteString(": ")
		b.Write(m.b(f.value))
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

func FuzzReadRequest(f *testing.F) {
	f.Add("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	f.Add("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close, X-A\r\n\r\nhello")
	f.Add("GET http://a/b HTTP/1.0\r\nX-Forwarded-For: 1.2.3.4\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")
	f.Add("PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nTE: trailers\r\n\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		m1, err := parseReq(in)
		if err != nil {
			return
		}
		out := serialize(m1)
		m2, err := parseReq(out)
		if err != nil {
			t.Fatalf("re-parse of %q: %v", out, err)
		}
		if serialize(m2) != out || m1.contentLength != m2.contentLength || m1.chunked != m2.chunked ||
			m1.isUpgrade() != m2.isUpgrade() || string(m1.Host()) != string(m2.Host()) || string(m1.Path()) != string(m2.Path()) {
			t.Fatalf("round trip changed the request:\n%q\n%q", out, serialize(m2))
		}
	})
}

func FuzzReadResponse(f *testing.F) {
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	f.Add("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	f.Add("HTTP/1.0 200\r\nTransfer-Encoding: chunked\r\n\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		m := &message{}
		if err := m.readResponse(bufio.NewReaderSize(strings.NewReader(in), 4096)); err != nil {
			return
		}
		if m.status < 100 || m.status > 999 {
			t.Fatalf("status %d parsed", m.status)
		}
	})
}

func dechunk(t testing.TB, in string, framed bool) (string, error) {
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	_, err := copyChunked(w, bufio.NewReaderSize(strings.NewReader(in), 4096), framed, endpoint{}, endpoint{})
	w.Flush()
	return out.String(), err
}

func TestChunked(t *testing.T) {
	tests := []struct {
		name, in, data string
		ok             bool
	}{
		{name: "two chunks", in: "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", data: "hello world", ok: true},
		{name: "extension and trailer", in: "5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n", data: "hello", ok: true},
		{name: "upper hex", in: "A\r\n0123456789\r\n0\r\n\r\n", data: "0123456789", ok: true},
		{name: "truncated", in: "5\r\nhel"},
		{name: "missing CRLF after data", in: "5\r\nhelloX\r\n0\r\n\r\n"},
		{name: "negative size", in: "-5\r\nhello\r\n0\r\n\r\n"},
		{name: "huge size", in: "ffffffffffffffffff\r\n"},
		{name: "no final chunk", in: "5\r\nhello\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := dechunk(t, tt.in, false)
			if (err == nil) != tt.ok || (tt.ok && got != tt.data) {
				t.Fatalf("got %q, %v", got, err)
			}
		})
	}
}

func FuzzChunked(f *testing.F) {
	f.Add("5\r\nhello\r\n0\r\n\r\n")
	f.Add("1;a=b\r\nx\r\n0\r\nT: v\r\n\r\n")
	f.Add("0\r\n\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		framed, err := dechunk(t, in, true)
		if err != nil {
			return
		}
		data, err := dechunk(t, in, false)
		if err != nil {
			t.Fatalf("plain copy failed where the framed one did not: %v", err)
		}
		// What carrier sends on must parse to the same data.
		again, err := dechunk(t, framed, false)
		if err != nil || again != data {
			t.Fatalf("re-framed body %q parses to %q, %v; want %q", framed, again, err, data)
		}
	})
}

// FuzzSliceReader: a head parsed from bytes already received (the event
// loop's way) reads as it does through a bufio.Reader (the goroutine
// path's), and one cut short says errIncomplete, never anything else.
func FuzzSliceReader(f *testing.F) {
	f.Add("GET / HTTP/1.1\r\nHost: x\r\n\r\n", true)
	f.Add("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", true)
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false)
	f.Add("HTTP/1.1 204 No Content\r\nX-A: b\r\n", false)
	f.Add("GET / HTTP/1.1\r\nHost", true)
	f.Fuzz(func(t *testing.T, in string, request bool) {
		read := func(m *message, r lineReader) error {
			if request {
				return m.readRequest(r)
			}
			return m.readResponse(r)
		}
		var fromBuf, fromSlice message
		br := bufio.NewReaderSize(strings.NewReader(in), 2*maxHeadBytes)
		errBuf := read(&fromBuf, br)
		sr := &sliceReader{b: []byte(in)}
		errSlice := read(&fromSlice, sr)
		switch {
		case errSlice == errIncomplete:
			if !errors.Is(errBuf, io.EOF) {
				t.Fatalf("cut short from the slice, %v through bufio", errBuf)
			}
		case (errSlice == nil) != (errBuf == nil):
			t.Fatalf("slice: %v, bufio: %v", errSlice, errBuf)
		case errSlice != nil:
			var ps, pb *protoError
			if errors.As(errSlice, &ps) != errors.As(errBuf, &pb) || (ps != nil && ps.Status != pb.Status) {
				t.Fatalf("slice: %v, bufio: %v", errSlice, errBuf)
			}
		default:
			if used := len(in) - br.Buffered(); sr.off != used {
				t.Fatalf("the slice reader took %d bytes, bufio %d", sr.off, used)
			}
			if serialize(&fromSlice) != serialize(&fromBuf) || fromSlice.status != fromBuf.status ||
				fromSlice.contentLength != fromBuf.contentLength || fromSlice.chunked != fromBuf.chunked {
				t.Fatalf("they differ:\n%q\n%q", serialize(&fromSlice), serialize(&fromBuf))
			}
		}
	})
}

// FuzzSniff: every request head readRequest takes (with a method of up to
// 32 bytes) sniffs as HTTP, from its full bytes and from any prefix long
// enough to hold the method and a space; no prefix sniffs as another
// protocol.
func FuzzSniff(f *testing.F) {
	f.Add("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	f.Add("\r\nPOST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
	f.Add("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	f.Add("*1\r\n$4\r\nPING\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		m, err := parseReq(in)
		if err != nil || len(m.Method()) > 32 {
			return
		}
		if v := sniff([]byte(in)); v != sniffHTTP {
			t.Fatalf("%q parses as a request but sniffs as %d", in, v)
		}
		for i := range len(in) {
			if sniff([]byte(in[:i])) == sniffOther {
				t.Fatalf("the prefix %q of a request sniffs as another protocol", in[:i])
			}
		}
	})
}
