package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func validHeader() Header {
	return Header{
		Bridge:     "oauth2-demo/myfastapi",
		Port:       8155,
		Credential: []byte("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjbGllbnQtYSJ9.c2ln"),
		ClientAddr: netip.MustParseAddrPort("10.244.0.7:41234"),
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		h    Header
	}{
		{name: "ipv4 client", h: validHeader()},
		{name: "no client address", h: func() Header { h := validHeader(); h.ClientAddr = netip.AddrPort{}; return h }()},
		{name: "ipv6 client", h: func() Header {
			h := validHeader()
			h.ClientAddr = netip.MustParseAddrPort("[fd00::1]:443")
			return h
		}()},
		{name: "ipv4-mapped ipv6 stays ipv6", h: func() Header {
			h := validHeader()
			h.ClientAddr = netip.MustParseAddrPort("[::ffff:10.0.0.1]:80")
			return h
		}()},
		{name: "longest names and credential", h: Header{
			Bridge:     strings.Repeat("n", MaxNamespaceLen) + "/" + strings.Repeat("b", MaxNameLen),
			Port:       65535,
			Credential: bytes.Repeat([]byte{0xff}, MaxCredentialLen),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Encode(&buf, &tt.h); err != nil {
				t.Fatal(err)
			}
			if buf.Len() != tt.h.EncodedLen() {
				t.Fatalf("encoded %d bytes, EncodedLen says %d", buf.Len(), tt.h.EncodedLen())
			}
			buf.WriteString("PAYLOAD")
			got, err := Decode(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if got.Bridge != tt.h.Bridge || got.Port != tt.h.Port || !bytes.Equal(got.Credential, tt.h.Credential) || got.ClientAddr != tt.h.ClientAddr {
				t.Fatalf("got %+v, want %+v", got, tt.h)
			}
			if rest := buf.String(); rest != "PAYLOAD" {
				t.Fatalf("Decode consumed payload: %q left", rest)
			}
		})
	}
}

func TestEncodeRejects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Header)
		want   string
	}{
		{name: "no slash", mutate: func(h *Header) { h.Bridge = "demo" }, want: "not namespace/name"},
		{name: "two slashes", mutate: func(h *Header) { h.Bridge = "a/b/c" }, want: "more than one"},
		{name: "upper case", mutate: func(h *Header) { h.Bridge = "Demo/x" }, want: "not allowed"},
		{name: "empty namespace", mutate: func(h *Header) { h.Bridge = "/x" }, want: "namespace"},
		{name: "empty name", mutate: func(h *Header) { h.Bridge = "x/" }, want: "name must"},
		{name: "namespace too long", mutate: func(h *Header) { h.Bridge = strings.Repeat("a", 64) + "/x" }, want: "namespace"},
		{name: "bridge too long", mutate: func(h *Header) { h.Bridge = "a/" + strings.Repeat("a", MaxBridgeLen) }, want: "exceeds"},
		{name: "port zero", mutate: func(h *Header) { h.Port = 0 }, want: "port 0"},
		{name: "no credential", mutate: func(h *Header) { h.Credential = nil }, want: "empty credential"},
		{name: "credential too long", mutate: func(h *Header) { h.Credential = make([]byte, MaxCredentialLen+1) }, want: "exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := validHeader()
			tt.mutate(&h)
			err := Encode(io.Discard, &h)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrInvalid containing %q", err, tt.want)
			}
		})
	}
}

func encoded(t testing.TB, h Header) []byte {
	b, err := h.AppendEncode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeRejects(t *testing.T) {
	good := encoded(t, validHeader())
	with := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name  string
		in    []byte
		isErr error
		want  string
	}{
		{name: "empty", in: nil, want: "EOF"},
		{name: "short fixed part", in: good[:7], want: "unexpected EOF"},
		{name: "short body", in: good[:len(good)-1], want: "unexpected EOF"},
		{name: "http request", in: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), isErr: ErrBadMagic},
		{name: "version 2", in: with(func(b []byte) []byte { b[4] = 2; return b }), isErr: ErrUnsupportedVersion},
		{name: "port 0", in: with(func(b []byte) []byte { b[5], b[6] = 0, 0; return b }), isErr: ErrInvalid},
		{name: "bridge length 0", in: with(func(b []byte) []byte { b[7], b[8] = 0, 0; return b }), isErr: ErrInvalid},
		{name: "bridge length over limit", in: with(func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[7:], MaxBridgeLen+1)
			return b
		}), isErr: ErrInvalid, want: "bridge name length"},
		{name: "credential length 65535", in: with(func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[9:], 0xffff)
			return b
		}), isErr: ErrInvalid, want: "credential length"},
		{name: "credential length 0", in: with(func(b []byte) []byte { b[9], b[10] = 0, 0; return b }), isErr: ErrInvalid},
		{name: "address length 5", in: with(func(b []byte) []byte { b[11] = 5; return b }), isErr: ErrInvalid, want: "client address length"},
		{name: "bad bridge characters", in: with(func(b []byte) []byte { b[FixedLen] = 'X'; return b }), isErr: ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(bytes.NewReader(tt.in))
			if err == nil {
				t.Fatal("decoded a bad header")
			}
			if tt.isErr != nil && !errors.Is(err, tt.isErr) {
				t.Fatalf("got %v, want %v", err, tt.isErr)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// countingReader fails the test if Decode asks for more than the header.
type countingReader struct {
	r    io.Reader
	read int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += n
	return n, err
}

func TestDecodeReadsExactlyTheHeaderOverTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h := validHeader()
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		b := encoded(t, h)
		// Header and payload in one segment: Decode must leave the payload.
		c.Write(append(b, "hello"...))
		ReadReply(c)
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	cr := &countingReader{r: c}
	got, err := Decode(cr)
	if err != nil {
		t.Fatal(err)
	}
	if cr.read != h.EncodedLen() || got.Bridge != h.Bridge {
		t.Fatalf("read %d bytes for a %d-byte header (%+v)", cr.read, h.EncodedLen(), got)
	}
	payload := make([]byte, 5)
	if _, err := io.ReadFull(c, payload); err != nil || string(payload) != "hello" {
		t.Fatalf("payload %q, %v", payload, err)
	}
	if err := WriteReply(c, CodeAccepted); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeHonoursDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go a.Write([]byte(Magic)) // a partial header, then silence
	b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := Decode(b)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("got %v, want a timeout", err)
	}
}

func TestReply(t *testing.T) {
	tests := []struct {
		name     string
		in       []byte
		accepted bool
		code     Code
		want     string
	}{
		{name: "accepted", in: []byte{Version, 0}, accepted: true},
		{name: "peer down", in: []byte{Version, byte(CodePeerDown)}, code: CodePeerDown, want: "peer down"},
		{name: "unknown code is a refusal", in: []byte{Version, 200}, code: 200, want: "code 200"},
		{name: "wrong version", in: []byte{9, 0}, want: "unsupported version"},
		{name: "short", in: []byte{Version}, want: "unexpected EOF"},
		{name: "http answer", in: []byte("HTTP/1.1 400"), want: "unsupported version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(tt.in)
			err := ReadReply(r)
			if tt.accepted {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want error containing %q", err, tt.want)
			}
			var re *RefusedError
			if tt.code != 0 && (!errors.As(err, &re) || re.Code != tt.code) {
				t.Fatalf("got %v, want RefusedError %d", err, tt.code)
			}
			if tt.code == 0 && errors.As(err, &re) {
				t.Fatalf("protocol error reported as refusal: %v", err)
			}
		})
	}
	var buf bytes.Buffer
	if err := WriteReply(&buf, CodeForbidden); err != nil {
		t.Fatal(err)
	}
	if err := ReadReply(&buf); err == nil || err.(*RefusedError).Code != CodeForbidden {
		t.Fatalf("round trip: %v", err)
	}
}

func TestCodeFor(t *testing.T) {
	good := encoded(t, validHeader())
	bad := append([]byte(nil), good...)
	bad[4] = 7
	_, errVersion := Decode(bytes.NewReader(bad))
	_, errMagic := Decode(strings.NewReader("SSH-2.0-OpenSSH_9.6\r\n"))
	tests := []struct {
		name string
		err  error
		want Code
	}{
		{name: "nil", err: nil, want: CodeAccepted},
		{name: "version", err: errVersion, want: CodeUnsupportedVersion},
		{name: "magic", err: errMagic, want: CodeMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CodeFor(tt.err); got != tt.want {
				t.Fatalf("CodeFor(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func FuzzRoundTrip(f *testing.F) {
	f.Add(encoded(f, validHeader()))
	h := validHeader()
	h.ClientAddr = netip.MustParseAddrPort("[2001:db8::5]:65535")
	f.Add(encoded(f, h))
	h.ClientAddr = netip.AddrPort{}
	f.Add(encoded(f, h))
	f.Add([]byte("GFYW\x01\x00\x50\x00\x03\x00\x01\x00a/bX"))
	f.Add([]byte("GFYW\x01\x00\x50\xff\xff\xff\xff\x12"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		h1, err := Decode(r)
		if err != nil {
			return
		}
		consumed := len(in) - r.Len()
		if consumed != h1.EncodedLen() {
			t.Fatalf("consumed %d bytes, header is %d", consumed, h1.EncodedLen())
		}
		out, err := h1.AppendEncode(nil)
		if err != nil {
			t.Fatalf("decoded header does not encode: %v", err)
		}
		if !bytes.Equal(out, in[:consumed]) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", in[:consumed], out)
		}
		h2, err := Decode(bytes.NewReader(out))
		if err != nil {
			t.Fatal(err)
		}
		if h1.Bridge != h2.Bridge || h1.Port != h2.Port || !bytes.Equal(h1.Credential, h2.Credential) || h1.ClientAddr != h2.ClientAddr {
			t.Fatalf("round trip changed the header: %+v vs %+v", h1, h2)
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	h := validHeader()
	buf := make([]byte, 0, MaxHeaderLen)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = h.AppendEncode(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	in := encoded(b, validHeader())
	r := bytes.NewReader(in)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		r.Reset(in)
		if _, err := Decode(r); err != nil {
			b.Fatal(err)
		}
	}
}
