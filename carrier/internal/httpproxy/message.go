package httpproxy

import (
	"bufio"
	"errors"
	"fmt"
)

// lineReader is where a message head is read from: a *bufio.Reader on the
// goroutine path, a sliceReader on the event loop.
type lineReader interface {
	ReadSlice(delim byte) ([]byte, error)
}

// errIncomplete: a sliceReader ran out of bytes before the head ended.
var errIncomplete = errors.New("incomplete message head")

// sliceReader reads lines of bytes already received.
type sliceReader struct {
	b   []byte
	off int
}

func (r *sliceReader) ReadSlice(delim byte) ([]byte, error) {
	rest := r.b[r.off:]
	i := indexByte(rest, delim)
	if i < 0 {
		return nil, errIncomplete
	}
	r.off += i + 1
	return rest[:i+1], nil
}

// Limits on what carrier reads of a message head.
const (
	maxHeadBytes = 64 << 10
	maxHeaders   = 256
)

var (
	errHeadTooLarge = errors.New("message head too large")
	errTooMany      = errors.New("too many header fields")
)

// protoError is a malformed message; Status is what a client gets for it.
type protoError struct {
	Status int
	Msg    string
}

func (e *protoError) Error() string { return e.Msg }

func bad(status int, format string, args ...any) error {
	return &protoError{Status: status, Msg: fmt.Sprintf(format, args...)}
}

type span struct{ s, e int32 }

func (s span) ok() bool { return s.e > s.s || s.s > 0 }

type field struct{ name, value span }

// message is the parsed head of one request or response. head holds the
// bytes of the head without line ends; every span indexes into it, so the
// buffers are reused from message to message.
type message struct {
	head   []byte
	fields []field

	// Start line: method, target for requests; status, reason for responses.
	method, target span
	status         int
	reason         span
	minor          int // HTTP/1.minor

	contentLength int64 // -1 if absent
	chunked       bool
	connClose     bool
	connKeepAlive bool
	connUpgrade   bool
	connTokens    []span // other tokens of Connection: fields to drop
	upgrade       span
	hasUpgrade    bool
	host          span
	hasHost       bool
	expect100     bool
	xff           []span
	teTrailers    bool
	bodyRead      bool // the request body has been read (forwarded)

	join []byte // scratch for Header
}

func (m *message) reset() {
	m.head = m.head[:0]
	m.fields = m.fields[:0]
	m.connTokens = m.connTokens[:0]
	m.xff = m.xff[:0]
	m.method, m.target, m.reason, m.upgrade, m.host = span{}, span{}, span{}, span{}, span{}
	m.status, m.minor = 0, 1
	m.contentLength = -1
	m.chunked, m.connClose, m.connKeepAlive, m.connUpgrade = false, false, false, false
	m.hasUpgrade, m.hasHost, m.expect100, m.teTrailers, m.bodyRead = false, false, false, false, false
}

func (m *message) b(s span) []byte { return m.head[s.s:s.e] }

// line reads one line into head and returns its span, without CR LF.
func (m *message) line(br lineReader) (span, error) {
	l, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return span{}, errHeadTooLarge
		}
		return span{}, err
	}
	n := len(l) - 1
	if n > 0 && l[n-1] == '\r' {
		n--
	}
	if len(m.head)+n > maxHeadBytes {
		return span{}, errHeadTooLarge
	}
	s := int32(len(m.head))
	m.head = append(m.head, l[:n]...)
	return span{s, int32(len(m.head))}, nil
}

// What sniff says of a connection's first bytes.
const (
	sniffMore  = iota // too few bytes to tell
	sniffHTTP         // they start as an HTTP request line (or HTTP/2's preface)
	sniffOther        // they do not: another protocol
)

// sniff tells whether a connection's first bytes start like an HTTP/1
// request line: a method token, then a space (HTTP/2's "PRI * HTTP/2.0"
// preface does too). Empty lines before it pass, as readRequest allows
// them; a run of more than a few is left to readRequest to refuse. The
// verdict comes within the first 41 bytes.
func sniff(b []byte) int {
	const maxEmpty, maxMethod = 8, 32
	i := 0
	for i < len(b) && (b[i] == '\r' || b[i] == '\n') {
		if i++; i > maxEmpty {
			return sniffHTTP
		}
	}
	for start := i; i < len(b); i++ {
		switch c := b[i]; {
		case c == ' ' && i > start:
			return sniffHTTP
		case !tokenChar[c], i-start == maxMethod:
			return sniffOther
		}
	}
	return sniffMore
}

// tokenChar marks the bytes allowed in a token (RFC 9110 5.6.2).
var tokenChar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenChar[c] {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// eqFold compares b to a lower-case ASCII string.
func eqFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		if lower(b[i]) != s[i] {
			return false
		}
	}
	return true
}

func trimOWS(b []byte, s span) span {
	for s.s < s.e && (b[s.s] == ' ' || b[s.s] == '\t') {
		s.s++
	}
	for s.e > s.s && (b[s.e-1] == ' ' || b[s.e-1] == '\t') {
		s.e--
	}
	return s
}

// readRequest reads a request head. io.EOF before any byte means the
// client closed between requests.
func (m *message) readRequest(br lineReader) error {
	m.reset()
	var ls span
	var err error
	for empty := 0; ; empty++ {
		if ls, err = m.line(br); err != nil {
			return err
		}
		if ls.e > ls.s {
			break
		}
		if empty > 4 {
			return bad(400, "empty request line")
		}
	}
	l := m.b(ls)
	sp1 := indexByte(l, ' ')
	if sp1 <= 0 {
		return bad(400, "malformed request line")
	}
	rest := l[sp1+1:]
	sp2 := indexByte(rest, ' ')
	if sp2 <= 0 {
		return bad(400, "malformed request line")
	}
	m.method = span{ls.s, ls.s + int32(sp1)}
	m.target = span{ls.s + int32(sp1) + 1, ls.s + int32(sp1+1+sp2)}
	if !isToken(m.b(m.method)) {
		return bad(400, "malformed method")
	}
	for _, c := range m.b(m.target) {
		if c <= ' ' || c == 0x7f {
			return bad(400, "malformed request target")
		}
	}
	switch string(rest[sp2+1:]) {
	case "HTTP/1.1":
		m.minor = 1
	case "HTTP/1.0":
		m.minor = 0
	default:
		return bad(505, "unsupported protocol version")
	}
	if err := m.readFields(br, true); err != nil {
		return err
	}
	if m.chunked && m.contentLength >= 0 {
		return bad(400, "both Transfer-Encoding and Content-Length")
	}
	if m.minor == 1 && !m.hasHost {
		return bad(400, "missing Host header")
	}
	return nil
}

// readResponse reads a response head.
func (m *message) readResponse(br lineReader) error {
	m.reset()
	ls, err := m.line(br)
	if err != nil {
		return err
	}
	l := m.b(ls)
	if len(l) < 12 || string(l[:7]) != "HTTP/1." || l[8] != ' ' || (len(l) > 12 && l[12] != ' ') {
		return bad(502, "malformed status line from upstream")
	}
	switch l[7] {
	case '0':
		m.minor = 0
	case '1':
		m.minor = 1
	default:
		return bad(502, "unsupported upstream protocol version")
	}
	st := 0
	for _, c := range l[9:12] {
		if c < '0' || c > '9' {
			return bad(502, "malformed status code from upstream")
		}
		st = st*10 + int(c-'0')
	}
	if st < 100 {
		return bad(502, "malformed status code from upstream")
	}
	m.status = st
	if len(l) > 13 {
		m.reason = span{ls.s + 13, ls.e}
	}
	if err := m.readFields(br, false); err != nil {
		var pe *protoError
		if errors.As(err, &pe) {
			pe.Status = 502
		}
		return err
	}
	return nil
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func (m *message) readFields(br lineReader, request bool) error {
	for {
		ls, err := m.line(br)
		if err != nil {
			return err
		}
		if ls.e == ls.s {
			return nil
		}
		l := m.b(ls)
		if l[0] == ' ' || l[0] == '\t' {
			return bad(400, "obsolete line folding")
		}
		colon := indexByte(l, ':')
		if colon <= 0 || !isToken(l[:colon]) {
			return bad(400, "malformed header field")
		}
		for _, c := range l[colon+1:] {
			if (c < ' ' && c != '\t') || c == 0x7f {
				return bad(400, "invalid byte in header value")
			}
		}
		if len(m.fields) >= maxHeaders {
			return errTooMany
		}
		f := field{name: span{ls.s, ls.s + int32(colon)}, value: trimOWS(m.head, span{ls.s + int32(colon) + 1, ls.e})}
		m.fields = append(m.fields, f)
		if err := m.interpret(f, request); err != nil {
			return err
		}
	}
}

// interpret records what the proxy itself must know of a field.
func (m *message) interpret(f field, request bool) error {
	name, v := m.b(f.name), m.b(f.value)
	switch len(name) {
	case 2:
		if eqFold(name, "te") && eqFold(v, "trailers") {
			m.teTrailers = true
		}
	case 4:
		if eqFold(name, "host") {
			if m.hasHost && request {
				return bad(400, "more than one Host header")
			}
			m.host, m.hasHost = f.value, true
		}
	case 6:
		if request && eqFold(name, "expect") {
			if !eqFold(v, "100-continue") {
				return bad(417, "unsupported expectation")
			}
			m.expect100 = true
		}
	case 7:
		if eqFold(name, "upgrade") {
			m.upgrade, m.hasUpgrade = f.value, true
		}
	case 10:
		if eqFold(name, "connection") {
			m.connectionTokens(f.value)
		}
	case 14:
		if eqFold(name, "content-length") {
			if len(v) == 0 || len(v) > 18 {
				return bad(400, "malformed Content-Length")
			}
			var n int64
			for _, c := range v {
				if c < '0' || c > '9' {
					return bad(400, "malformed Content-Length")
				}
				n = n*10 + int64(c-'0')
			}
			if m.contentLength >= 0 && m.contentLength != n {
				return bad(400, "conflicting Content-Length headers")
			}
			m.contentLength = n
		}
	case 15:
		if request && eqFold(name, "x-forwarded-for") {
			m.xff = append(m.xff, f.value)
		}
	case 17:
		if eqFold(name, "transfer-encoding") {
			if m.chunked || !eqFold(v, "chunked") {
				if request {
					return bad(501, "unsupported Transfer-Encoding")
				}
				return bad(502, "unsupported Transfer-Encoding from upstream")
			}
			m.chunked = true
		}
	}
	return nil
}

func (m *message) connectionTokens(s span) {
	b := m.head
	for s.s < s.e {
		i := s.s
		for i < s.e && b[i] != ',' {
			i++
		}
		t := trimOWS(b, span{s.s, i})
		tb := b[t.s:t.e]
		switch {
		case len(tb) == 0:
		case eqFold(tb, "close"):
			m.connClose = true
		case eqFold(tb, "keep-alive"):
			m.connKeepAlive = true
		case eqFold(tb, "upgrade"):
			m.connUpgrade = true
		default:
			m.connTokens = append(m.connTokens, t)
		}
		s.s = i + 1
	}
}

// isUpgrade reports a protocol switch carrier forwards (WebSocket and the
// like). An h2c upgrade is declined by forwarding the request as plain
// HTTP/1.1 without it, which RFC 9113 permits.
func (m *message) isUpgrade() bool {
	return m.connUpgrade && m.hasUpgrade && !eqFold(m.b(m.upgrade), "h2c")
}

// hopByHop reports whether a field must not be forwarded.
func (m *message) hopByHop(name []byte, request bool) bool {
	switch len(name) {
	case 2:
		if eqFold(name, "te") {
			return true // re-added as "TE: trailers" if that is what it said
		}
	case 6:
		if request && eqFold(name, "expect") {
			return true // carrier answers 100-continue itself
		}
	case 7:
		if eqFold(name, "upgrade") {
			return true // re-added for forwarded upgrades
		}
	case 10:
		if eqFold(name, "connection") || eqFold(name, "keep-alive") {
			return true
		}
	case 15:
		if request && eqFold(name, "x-forwarded-for") {
			return true // re-added with the client appended
		}
	case 16:
		if eqFold(name, "proxy-connection") {
			return true
		}
	case 17:
		if eqFold(name, "transfer-encoding") {
			return true // re-added when the body is chunked
		}
	}
	for _, t := range m.connTokens {
		tb := m.b(t)
		if len(tb) == len(name) {
			same := true
			for i := range tb {
				if lower(tb[i]) != lower(name[i]) {
					same = false
					break
				}
			}
			if same {
				return true
			}
		}
	}
	return false
}

// Method, Host, Path and Header make a request a config.Request.

func (m *message) Method() []byte { return m.b(m.method) }

func (m *message) Host() []byte {
	if m.hasHost {
		return m.b(m.host)
	}
	if _, host, ok := m.absoluteTarget(); ok {
		return host
	}
	return nil
}

func (m *message) Path() []byte {
	if path, _, ok := m.absoluteTarget(); ok {
		return path
	}
	return m.b(m.target)
}

// absoluteTarget splits an absolute-form target into path and authority.
func (m *message) absoluteTarget() (path, host []byte, ok bool) {
	t := m.b(m.target)
	var rest []byte
	switch {
	case len(t) > 7 && eqFold(t[:7], "http://"):
		rest = t[7:]
	case len(t) > 8 && eqFold(t[:8], "https://"):
		rest = t[8:]
	default:
		return nil, nil, false
	}
	i := 0
	for i < len(rest) && rest[i] != '/' && rest[i] != '?' {
		i++
	}
	path = rest[i:]
	if len(path) == 0 {
		path = []byte("/")
	}
	return path, rest[:i], true
}

func (m *message) Header(name string) ([]byte, bool) {
	var first []byte
	n := 0
	for _, f := range m.fields {
		if eqFold(m.b(f.name), name) {
			if n == 0 {
				first = m.b(f.value)
			} else {
				if n == 1 {
					m.join = append(m.join[:0], first...)
				}
				m.join = append(m.join, ',')
				m.join = append(m.join, m.b(f.value)...)
			}
			n++
		}
	}
	switch n {
	case 0:
		return nil, false
	case 1:
		return first, true
	}
	return m.join, true
}
