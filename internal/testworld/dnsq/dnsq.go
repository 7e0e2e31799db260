// Package dnsq asks one DNS server one question over UDP or TCP and reads its
// answer, for the checks of the test world's cluster DNS: world.sh waits
// with it (world/dnsq) until CoreDNS answers, and the end-to-end tests query
// the DNS Service from the host with it. It never reads the machine's
// resolver configuration (/etc/resolv.conf, /etc/hosts), so a question goes
// to the server it names and nowhere else.
package dnsq

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// DialFunc dials the server; net.Dialer.DialContext is one.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Answer is what the server said.
type Answer struct {
	RCode     dnsmessage.RCode
	Truncated bool
	// Authoritative is the AA bit: the server answered from its own zone.
	Authoritative bool
	Records       []Record
}

// Record is one resource record of the answer section.
type Record struct {
	Name string
	Type dnsmessage.Type
	TTL  uint32
	// Data is the record's value as text: an address, a name, or for SRV
	// "priority weight port target".
	Data string
}

func (r Record) String() string {
	return fmt.Sprintf("%s\t%d\t%s\t%s", r.Name, r.TTL, TypeName(r.Type), r.Data)
}

// Addrs returns the addresses of the A and AAAA records.
func (a *Answer) Addrs() []string {
	var out []string
	for _, r := range a.Records {
		if r.Type == dnsmessage.TypeA || r.Type == dnsmessage.TypeAAAA {
			out = append(out, r.Data)
		}
	}
	return out
}

// Of returns the Data of every record of type t.
func (a *Answer) Of(t dnsmessage.Type) []string {
	var out []string
	for _, r := range a.Records {
		if r.Type == t {
			out = append(out, r.Data)
		}
	}
	return out
}

// Status is the response code as DNS tools print it: NOERROR, NXDOMAIN,
// SERVFAIL, ...
func (a *Answer) Status() string { return RCodeName(a.RCode) }

var types = map[string]dnsmessage.Type{
	"A": dnsmessage.TypeA, "AAAA": dnsmessage.TypeAAAA, "CNAME": dnsmessage.TypeCNAME,
	"PTR": dnsmessage.TypePTR, "SRV": dnsmessage.TypeSRV, "TXT": dnsmessage.TypeTXT,
	"NS": dnsmessage.TypeNS, "SOA": dnsmessage.TypeSOA, "MX": dnsmessage.TypeMX,
	"ANY": dnsmessage.TypeALL,
}

// ParseType parses a record type name (A, AAAA, CNAME, PTR, SRV, TXT, NS,
// SOA, MX, ANY), case-insensitively.
func ParseType(s string) (dnsmessage.Type, error) {
	if t, ok := types[strings.ToUpper(s)]; ok {
		return t, nil
	}
	return 0, fmt.Errorf("unknown record type %q (want one of A, AAAA, CNAME, PTR, SRV, TXT, NS, SOA, MX, ANY)", s)
}

// TypeName is the name ParseType parses, or TYPEn for any other type.
func TypeName(t dnsmessage.Type) string {
	for k, v := range types {
		if v == t {
			return k
		}
	}
	return fmt.Sprintf("TYPE%d", uint16(t))
}

// RCodeName is the name of a response code: NOERROR, NXDOMAIN, SERVFAIL,
// REFUSED, ..., or RCODEn.
func RCodeName(c dnsmessage.RCode) string {
	switch c {
	case dnsmessage.RCodeSuccess:
		return "NOERROR"
	case dnsmessage.RCodeFormatError:
		return "FORMERR"
	case dnsmessage.RCodeServerFailure:
		return "SERVFAIL"
	case dnsmessage.RCodeNameError:
		return "NXDOMAIN"
	case dnsmessage.RCodeNotImplemented:
		return "NOTIMP"
	case dnsmessage.RCodeRefused:
		return "REFUSED"
	}
	return fmt.Sprintf("RCODE%d", uint16(c))
}

// Server turns "IP" or "IP:PORT" into "IP:PORT" (port 53 when none is
// given). Only IP addresses are accepted: resolving the server's own name
// would ask some other DNS server first.
func Server(s string) (string, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return "", fmt.Errorf("DNS server %q: port 0", s)
		}
		return ap.String(), nil
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil {
		return "", fmt.Errorf("DNS server %q: want IP or IP:PORT", s)
	}
	return netip.AddrPortFrom(a, 53).String(), nil
}

// Ask sends the question (name, qtype) to server ("IP:PORT") over network
// ("udp" or "tcp") through dial and returns the answer. A truncated UDP
// answer is asked again over TCP. name is taken as fully qualified: no
// search list applies. ctx bounds the whole exchange; without a deadline,
// each attempt gets 5 s.
func Ask(ctx context.Context, dial DialFunc, network, server, name string, qtype dnsmessage.Type) (*Answer, error) {
	if network != "udp" && network != "tcp" {
		return nil, fmt.Errorf("dnsq: network %q: want udp or tcp", network)
	}
	q, err := question(name, qtype)
	if err != nil {
		return nil, err
	}
	a, err := exchange(ctx, dial, network, server, q)
	if err == nil && network == "udp" && a.Truncated {
		return exchange(ctx, dial, "tcp", server, q)
	}
	return a, err
}

func question(name string, qtype dnsmessage.Type) (dnsmessage.Question, error) {
	if name == "" {
		return dnsmessage.Question{}, errors.New("dnsq: empty name")
	}
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	n, err := dnsmessage.NewName(name)
	if err != nil {
		return dnsmessage.Question{}, fmt.Errorf("dnsq: name %q: %w", name, err)
	}
	return dnsmessage.Question{Name: n, Type: qtype, Class: dnsmessage.ClassINET}, nil
}

// Pack builds a query with the given ID for q, recursion desired.
func pack(id uint16, q dnsmessage.Question) ([]byte, error) {
	m := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{q},
	}
	return m.Pack()
}

func exchange(ctx context.Context, dial DialFunc, network, server string, q dnsmessage.Question) (*Answer, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	var idb [2]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return nil, err
	}
	id := binary.BigEndian.Uint16(idb[:])
	msg, err := pack(id, q)
	if err != nil {
		return nil, fmt.Errorf("dnsq: %w", err)
	}
	c, err := dial(ctx, network, server)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if network == "tcp" {
		framed := binary.BigEndian.AppendUint16(nil, uint16(len(msg)))
		if _, err := c.Write(append(framed, msg...)); err != nil {
			return nil, fmt.Errorf("dnsq: asking %s over tcp: %w", server, err)
		}
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return nil, fmt.Errorf("dnsq: no answer from %s over tcp: %w", server, err)
		}
		b := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, b); err != nil {
			return nil, fmt.Errorf("dnsq: short answer from %s over tcp: %w", server, err)
		}
		return parse(b, id, q)
	}
	if _, err := c.Write(msg); err != nil {
		return nil, fmt.Errorf("dnsq: asking %s over udp: %w", server, err)
	}
	b := make([]byte, 64<<10)
	for {
		n, err := c.Read(b)
		if err != nil {
			return nil, fmt.Errorf("dnsq: no answer from %s over udp: %w", server, err)
		}
		a, err := parse(b[:n], id, q)
		if errors.Is(err, errNotOurs) {
			continue // a late answer to someone else's question
		}
		return a, err
	}
}

var errNotOurs = errors.New("dnsq: an answer to another question")

// parse reads the answer b to the query with the given id and question.
func parse(b []byte, id uint16, q dnsmessage.Question) (*Answer, error) {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil {
		return nil, fmt.Errorf("dnsq: malformed answer: %w", err)
	}
	if !h.Response || h.ID != id {
		return nil, errNotOurs
	}
	qs, err := p.AllQuestions()
	if err != nil {
		return nil, fmt.Errorf("dnsq: malformed answer: %w", err)
	}
	if len(qs) != 1 || qs[0].Type != q.Type || !strings.EqualFold(qs[0].Name.String(), q.Name.String()) {
		return nil, errNotOurs
	}
	a := &Answer{RCode: h.RCode, Truncated: h.Truncated, Authoritative: h.Authoritative}
	for {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			return a, nil
		}
		if err != nil {
			return nil, fmt.Errorf("dnsq: malformed answer: %w", err)
		}
		r := Record{Name: rh.Name.String(), Type: rh.Type, TTL: rh.TTL}
		if r.Data, err = data(&p, rh.Type); err != nil {
			return nil, fmt.Errorf("dnsq: malformed %s record: %w", TypeName(rh.Type), err)
		}
		a.Records = append(a.Records, r)
	}
}

// data reads the body of the current record as text.
func data(p *dnsmessage.Parser, t dnsmessage.Type) (string, error) {
	switch t {
	case dnsmessage.TypeA:
		r, err := p.AResource()
		return netip.AddrFrom4(r.A).String(), err
	case dnsmessage.TypeAAAA:
		r, err := p.AAAAResource()
		return netip.AddrFrom16(r.AAAA).String(), err
	case dnsmessage.TypeCNAME:
		r, err := p.CNAMEResource()
		return r.CNAME.String(), err
	case dnsmessage.TypePTR:
		r, err := p.PTRResource()
		return r.PTR.String(), err
	case dnsmessage.TypeNS:
		r, err := p.NSResource()
		return r.NS.String(), err
	case dnsmessage.TypeSRV:
		r, err := p.SRVResource()
		return fmt.Sprintf("%d %d %d %s", r.Priority, r.Weight, r.Port, r.Target), err
	case dnsmessage.TypeTXT:
		r, err := p.TXTResource()
		return strings.Join(r.TXT, " "), err
	case dnsmessage.TypeMX:
		r, err := p.MXResource()
		return fmt.Sprintf("%d %s", r.Pref, r.MX), err
	case dnsmessage.TypeSOA:
		r, err := p.SOAResource()
		return fmt.Sprintf("%s %s %d", r.NS, r.MBox, r.Serial), err
	}
	r, err := p.UnknownResource()
	return fmt.Sprintf("\\# %d %x", len(r.Data), r.Data), err
}
