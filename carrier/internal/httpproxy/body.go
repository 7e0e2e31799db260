package httpproxy

import (
	"bufio"
	"errors"
	"net"
	"strconv"
	"time"

	"gefyra.dev/gefyra/carrier/internal/upstream"
)

// Errors of a body copy say which side failed.
type readError struct{ error }
type writeError struct{ error }

func (e readError) Unwrap() error { return e.error }

// isReadError reports a readError without making err escape.
func isReadError(err error) bool {
	_, ok := err.(readError)
	return ok
}
func (e writeError) Unwrap() error { return e.error }

// isWriteError reports a writeError without making err escape.
func isWriteError(err error) bool {
	_, ok := err.(writeError)
	return ok
}

// endpoint is one side of a copy: its connection and deadlines, and its
// idle timeout (0: none; c nil: no deadlines at all).
type endpoint struct {
	c    net.Conn
	dl   *upstream.Deadlines
	idle time.Duration
}

// fill makes src have at least one buffered byte, flushing dst first so a
// slow or streaming sender's bytes are not held back.
func fill(dst *bufio.Writer, src *bufio.Reader, d, s endpoint) error {
	if src.Buffered() > 0 {
		return nil
	}
	if dst.Buffered() > 0 {
		if d.c != nil {
			d.dl.Write(d.c, time.Now(), d.idle)
		}
		if err := dst.Flush(); err != nil {
			return writeError{err}
		}
	}
	if s.c != nil {
		s.dl.Read(s.c, time.Now(), s.idle)
	}
	if _, err := src.Peek(1); err != nil {
		return readError{err}
	}
	return nil
}

// copyN copies exactly n bytes.
func copyN(dst *bufio.Writer, src *bufio.Reader, n int64, d, s endpoint) (int64, error) {
	var done int64
	for done < n {
		if err := fill(dst, src, d, s); err != nil {
			if errors.Is(err, errEOF) {
				err = readError{errUnexpectedEOF}
			}
			return done, err
		}
		b, _ := src.Peek(int(min(int64(src.Buffered()), n-done)))
		w, err := dst.Write(b)
		src.Discard(w)
		done += int64(w)
		if err != nil {
			return done, writeError{err}
		}
	}
	return done, nil
}

// copyAll copies until src ends.
func copyAll(dst *bufio.Writer, src *bufio.Reader, d, s endpoint) (int64, error) {
	var done int64
	for {
		if err := fill(dst, src, d, s); err != nil {
			if re, ok := err.(readError); ok && re.error == errEOF {
				return done, nil
			}
			return done, err
		}
		b, _ := src.Peek(src.Buffered())
		w, err := dst.Write(b)
		src.Discard(w)
		done += int64(w)
		if err != nil {
			return done, writeError{err}
		}
	}
}

const maxChunkLine = 4096

// readChunkLine reads a chunk-size or trailer line, without CR LF.
func readChunkLine(dst *bufio.Writer, src *bufio.Reader, d, s endpoint) ([]byte, error) {
	if err := fill(dst, src, d, s); err != nil {
		if errors.Is(err, errEOF) {
			err = readError{errUnexpectedEOF}
		}
		return nil, err
	}
	l, err := src.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, readError{errMalformedChunk}
		}
		if errors.Is(err, errEOF) {
			err = errUnexpectedEOF
		}
		return nil, readError{err}
	}
	if len(l) > maxChunkLine {
		return nil, readError{errMalformedChunk}
	}
	l = l[:len(l)-1]
	if len(l) > 0 && l[len(l)-1] == '\r' {
		l = l[:len(l)-1]
	}
	return l, nil
}

// copyChunked relays a chunked body. With framed it writes the chunked
// framing (and trailers) on; without it writes only the data, for a client
// that cannot take chunked encoding.
func copyChunked(dst *bufio.Writer, src *bufio.Reader, framed bool, d, s endpoint) (int64, error) {
	var total int64
	var num [20]byte
	for {
		l, err := readChunkLine(dst, src, d, s)
		if err != nil {
			return total, err
		}
		if i := indexByte(l, ';'); i >= 0 {
			l = l[:i] // chunk extensions are dropped
		}
		for len(l) > 0 && (l[len(l)-1] == ' ' || l[len(l)-1] == '\t') {
			l = l[:len(l)-1]
		}
		if len(l) == 0 || len(l) > 15 {
			return total, readError{errMalformedChunk}
		}
		var n int64
		for _, c := range l {
			var v byte
			switch {
			case '0' <= c && c <= '9':
				v = c - '0'
			case 'a' <= c && c <= 'f':
				v = c - 'a' + 10
			case 'A' <= c && c <= 'F':
				v = c - 'A' + 10
			default:
				return total, readError{errMalformedChunk}
			}
			n = n<<4 | int64(v)
		}
		if n == 0 {
			if framed {
				if _, err := dst.WriteString("0\r\n"); err != nil {
					return total, writeError{err}
				}
			}
			for {
				t, err := readChunkLine(dst, src, d, s)
				if err != nil {
					return total, err
				}
				if framed {
					dst.Write(t)
					if _, err := dst.WriteString("\r\n"); err != nil {
						return total, writeError{err}
					}
				}
				if len(t) == 0 {
					return total, nil
				}
			}
		}
		if framed {
			dst.Write(strconv.AppendInt(num[:0], n, 16))
			if _, err := dst.WriteString("\r\n"); err != nil {
				return total, writeError{err}
			}
		}
		w, err := copyN(dst, src, n, d, s)
		total += w
		if err != nil {
			return total, err
		}
		crlf, err := readChunkLine(dst, src, d, s)
		if err != nil {
			return total, err
		}
		if len(crlf) != 0 {
			return total, readError{errMalformedChunk}
		}
		if framed {
			if _, err := dst.WriteString("\r\n"); err != nil {
				return total, writeError{err}
			}
		}
	}
}
