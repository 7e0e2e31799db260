// Package wire is the connection preamble carrier sends to stowaway before
// any payload byte, and stowaway's answer to it.
//
// A carrier opens one TCP connection to stowaway's relay port per bridged
// connection (or per pooled HTTP keep-alive connection). It first writes a
// Header; stowaway reads exactly that many bytes, checks the credential and
// the bridge, dials the developer's side and answers with a two-byte Reply.
// Only after an accepted Reply do payload bytes flow, in both directions,
// unchanged, until either side closes. A refused Reply is followed by
// stowaway closing the connection, so carrier learns whether the bridge is
// reachable before it has sent a single request byte and can still use the
// fallback.
//
// # Header, version 1
//
// All integers are big-endian. The fixed part is 12 bytes:
//
//	offset size field
//	0      4    magic "GFYW" (0x47 0x46 0x59 0x57)
//	4      1    version, 1
//	5      2    target port: the bridge's remote port of the mapping, 1..65535
//	7      2    N: length of the bridge name, 3..MaxBridgeLen
//	9      2    C: length of the credential, 1..MaxCredentialLen
//	11     1    A: length of the client address: 0 (absent), 6 (IPv4) or 18 (IPv6)
//
// followed by the variable part, N+C+A bytes:
//
//	N bytes  bridge name: the GefyraBridge's "namespace/name", lower-case
//	         letters, digits, '-' and '.', exactly one '/', the namespace at
//	         most 63 bytes, the name at most 253
//	C bytes  credential: opaque to this package (a short-lived JWT issued by
//	         the control plane); stowaway verifies it
//	A bytes  original client address: the IP (4 or 16 bytes) then the port
//	         (2 bytes); an IPv6 zone is not carried
//
// Every length is checked against its limit before anything is allocated,
// so a header costs at most 12 + MaxBodyLen bytes of memory whatever a peer
// sends. Decode reads exactly the header and nothing more: every byte after
// it on the stream is payload.
//
// # Reply
//
// Two bytes: the version (1) and a Code. CodeAccepted (0) means payload may
// flow; any other code is a refusal, after which stowaway closes the
// connection. Unknown non-zero codes are refusals too, so new reasons can be
// added without a new version.
//
// # Versioning
//
// A peer that gets a version it does not speak answers (if it is stowaway)
// CodeUnsupportedVersion and closes. A new version may change anything after
// the version byte.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Magic opens every Header.
const Magic = "GFYW"

// Version is the only version this package speaks.
const Version = 1

// Limits of the variable fields.
const (
	MaxNamespaceLen  = 63
	MaxNameLen       = 253
	MaxBridgeLen     = MaxNamespaceLen + 1 + MaxNameLen
	MaxCredentialLen = 8192
	FixedLen         = 12
	MaxBodyLen       = MaxBridgeLen + MaxCredentialLen + 18
	MaxHeaderLen     = FixedLen + MaxBodyLen
	ReplyLen         = 2
)

// Errors Decode and Encode wrap; test with errors.Is.
var (
	ErrBadMagic           = errors.New("wire: not a gefyra preamble (bad magic)")
	ErrUnsupportedVersion = errors.New("wire: unsupported version")
	ErrInvalid            = errors.New("wire: invalid header")
)

// Header is what carrier says before the payload.
type Header struct {
	// Bridge is the GefyraBridge as "namespace/name".
	Bridge string
	// Port is the remote port of the bridge's port mapping.
	Port uint16
	// Credential is opaque here; stowaway verifies it.
	Credential []byte
	// ClientAddr is the original client's address, the zero value if unknown.
	ClientAddr netip.AddrPort
}

// Validate reports whether h can be encoded.
func (h *Header) Validate() error {
	if err := ValidateBridge(h.Bridge); err != nil {
		return err
	}
	if h.Port == 0 {
		return fmt.Errorf("%w: target port 0", ErrInvalid)
	}
	if len(h.Credential) == 0 {
		return fmt.Errorf("%w: empty credential", ErrInvalid)
	}
	if len(h.Credential) > MaxCredentialLen {
		return fmt.Errorf("%w: credential of %d bytes exceeds %d", ErrInvalid, len(h.Credential), MaxCredentialLen)
	}
	return nil
}

// ValidateBridge checks a bridge name: "namespace/name" with the character
// set and lengths Kubernetes allows.
func ValidateBridge(b string) error {
	if len(b) > MaxBridgeLen {
		return fmt.Errorf("%w: bridge name of %d bytes exceeds %d", ErrInvalid, len(b), MaxBridgeLen)
	}
	slash := -1
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.':
		case c == '/':
			if slash >= 0 {
				return fmt.Errorf("%w: bridge name %q has more than one '/'", ErrInvalid, b)
			}
			slash = i
		default:
			return fmt.Errorf("%w: bridge name %q: byte %#x not allowed (want lower-case letters, digits, '-', '.')", ErrInvalid, b, c)
		}
	}
	if slash < 0 {
		return fmt.Errorf("%w: bridge name %q is not namespace/name", ErrInvalid, b)
	}
	if ns := slash; ns == 0 || ns > MaxNamespaceLen {
		return fmt.Errorf("%w: bridge name %q: namespace must be 1..%d bytes", ErrInvalid, b, MaxNamespaceLen)
	}
	if n := len(b) - slash - 1; n == 0 || n > MaxNameLen {
		return fmt.Errorf("%w: bridge name %q: name must be 1..%d bytes", ErrInvalid, b, MaxNameLen)
	}
	return nil
}

// EncodedLen is the number of bytes AppendEncode adds for a valid h.
func (h *Header) EncodedLen() int {
	return FixedLen + len(h.Bridge) + len(h.Credential) + addrLen(h.ClientAddr)
}

func addrLen(ap netip.AddrPort) int {
	switch {
	case !ap.IsValid():
		return 0
	case ap.Addr().Is4():
		return 6
	default:
		return 18
	}
}

// AppendEncode appends the encoded header to b.
func (h *Header) AppendEncode(b []byte) ([]byte, error) {
	if err := h.Validate(); err != nil {
		return b, err
	}
	b = append(b, Magic...)
	b = append(b, Version)
	b = binary.BigEndian.AppendUint16(b, h.Port)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.Bridge)))
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.Credential)))
	b = append(b, byte(addrLen(h.ClientAddr)))
	b = append(b, h.Bridge...)
	b = append(b, h.Credential...)
	if h.ClientAddr.IsValid() {
		a := h.ClientAddr.Addr()
		if a.Is4() {
			a4 := a.As4()
			b = append(b, a4[:]...)
		} else {
			a16 := a.As16()
			b = append(b, a16[:]...)
		}
		b = binary.BigEndian.AppendUint16(b, h.ClientAddr.Port())
	}
	return b, nil
}

// Encode writes h to w in one Write call.
func Encode(w io.Writer, h *Header) error {
	b, err := h.AppendEncode(make([]byte, 0, h.EncodedLen()))
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// Decode reads exactly one header from r and nothing more. Set a read
// deadline on a connection before calling it: Decode itself never waits
// longer than r lets it. It never allocates more than MaxBodyLen bytes.
func Decode(r io.Reader) (Header, error) {
	var fixed [FixedLen]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return Header{}, fmt.Errorf("wire: reading header: %w", err)
	}
	if string(fixed[:4]) != Magic {
		return Header{}, ErrBadMagic
	}
	if fixed[4] != Version {
		return Header{}, fmt.Errorf("%w %d (want %d)", ErrUnsupportedVersion, fixed[4], Version)
	}
	port := binary.BigEndian.Uint16(fixed[5:7])
	n := int(binary.BigEndian.Uint16(fixed[7:9]))
	c := int(binary.BigEndian.Uint16(fixed[9:11]))
	a := int(fixed[11])
	switch {
	case port == 0:
		return Header{}, fmt.Errorf("%w: target port 0", ErrInvalid)
	case n == 0 || n > MaxBridgeLen:
		return Header{}, fmt.Errorf("%w: bridge name length %d (want 1..%d)", ErrInvalid, n, MaxBridgeLen)
	case c == 0 || c > MaxCredentialLen:
		return Header{}, fmt.Errorf("%w: credential length %d (want 1..%d)", ErrInvalid, c, MaxCredentialLen)
	case a != 0 && a != 6 && a != 18:
		return Header{}, fmt.Errorf("%w: client address length %d (want 0, 6 or 18)", ErrInvalid, a)
	}
	body := make([]byte, n+c+a)
	if _, err := io.ReadFull(r, body); err != nil {
		return Header{}, fmt.Errorf("wire: reading header body: %w", err)
	}
	h := Header{
		Bridge:     string(body[:n]),
		Port:       port,
		Credential: body[n : n+c : n+c],
	}
	if err := ValidateBridge(h.Bridge); err != nil {
		return Header{}, err
	}
	if a > 0 {
		ab := body[n+c:]
		var ip netip.Addr
		if a == 6 {
			ip = netip.AddrFrom4([4]byte(ab[:4]))
		} else {
			ip = netip.AddrFrom16([16]byte(ab[:16]))
		}
		h.ClientAddr = netip.AddrPortFrom(ip, binary.BigEndian.Uint16(ab[a-2:]))
	}
	return h, nil
}

// Code is stowaway's answer to a Header.
type Code uint8

// Reply codes. Anything but CodeAccepted is a refusal.
const (
	CodeAccepted           Code = 0
	CodeMalformed          Code = 1 // the header could not be parsed
	CodeUnsupportedVersion Code = 2 // the header's version is not spoken here
	CodeUnauthenticated    Code = 3 // credential missing, invalid or expired
	CodeForbidden          Code = 4 // credential valid but not for this bridge
	CodeUnknownBridge      Code = 5 // no such bridge (or no such port mapping)
	CodePeerDown           Code = 6 // the developer's tunnel is not up
	CodeDialFailed         Code = 7 // tunnel up, but the local target did not accept
	CodeInternal           Code = 8 // stowaway could not serve the connection
)

func (c Code) String() string {
	switch c {
	case CodeAccepted:
		return "accepted"
	case CodeMalformed:
		return "malformed header"
	case CodeUnsupportedVersion:
		return "unsupported version"
	case CodeUnauthenticated:
		return "unauthenticated"
	case CodeForbidden:
		return "forbidden"
	case CodeUnknownBridge:
		return "unknown bridge"
	case CodePeerDown:
		return "peer down"
	case CodeDialFailed:
		return "dial failed"
	case CodeInternal:
		return "internal error"
	}
	return fmt.Sprintf("code %d", uint8(c))
}

// RefusedError is what ReadReply returns for a refusal.
type RefusedError struct{ Code Code }

func (e *RefusedError) Error() string { return "wire: stowaway refused: " + e.Code.String() }

// WriteReply writes a two-byte reply.
func WriteReply(w io.Writer, c Code) error {
	_, err := w.Write([]byte{Version, byte(c)})
	return err
}

// ReadReply reads exactly one reply from r. It returns nil for
// CodeAccepted and a *RefusedError for a refusal.
func ReadReply(r io.Reader) error {
	var b [ReplyLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return fmt.Errorf("wire: reading reply: %w", err)
	}
	if b[0] != Version {
		return fmt.Errorf("%w %d in reply (want %d)", ErrUnsupportedVersion, b[0], Version)
	}
	if c := Code(b[1]); c != CodeAccepted {
		return &RefusedError{Code: c}
	}
	return nil
}

// CodeFor maps a Decode error to the reply a relay should send.
func CodeFor(err error) Code {
	switch {
	case err == nil:
		return CodeAccepted
	case errors.Is(err, ErrUnsupportedVersion):
		return CodeUnsupportedVersion
	default:
		return CodeMalformed
	}
}
