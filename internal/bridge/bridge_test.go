package bridge

import (
	"strings"
	"testing"
)

func TestParsePortMapping(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    PortMapping
		wantErr string
	}{
		{name: "same port", in: "8155:8155", want: PortMapping{Remote: 8155, Local: 8155}},
		{name: "different ports", in: "80:8080", want: PortMapping{Remote: 80, Local: 8080}},
		{name: "single port means both", in: "8155", want: PortMapping{Remote: 8155, Local: 8155}},
		{name: "highest", in: "65535:1", want: PortMapping{Remote: 65535, Local: 1}},
		{name: "tcp", in: "5432:5432/tcp", want: PortMapping{Remote: 5432, Local: 5432, Protocol: ProtocolTCP}},
		{name: "tcp in capitals", in: "5432:15432/TCP", want: PortMapping{Remote: 5432, Local: 15432, Protocol: ProtocolTCP}},
		{name: "single port tcp", in: "6379/tcp", want: PortMapping{Remote: 6379, Local: 6379, Protocol: ProtocolTCP}},
		{name: "http spelled out", in: "80:8080/http", want: PortMapping{Remote: 80, Local: 8080}},
		{name: "udp", in: "53:53/udp", wantErr: "UDP ports cannot be bridged"},
		{name: "unknown protocol", in: "80:80/grpc", wantErr: `unknown protocol "grpc": want tcp or http`},
		{name: "protocol missing", in: "80:80/", wantErr: "the protocol after / is missing"},
		{name: "protocol twice", in: "80:80/tcp/tcp", wantErr: "unknown protocol"},
		{name: "only a protocol", in: "/tcp", wantErr: "remote port: missing"},
		{name: "empty", in: "", wantErr: "remote port: missing"},
		{name: "no remote", in: ":80", wantErr: "remote port: missing"},
		{name: "no local", in: "80:", wantErr: "local port: missing"},
		{name: "zero", in: "0:80", wantErr: "out of range 1-65535"},
		{name: "too big", in: "80:65536", wantErr: "out of range 1-65535"},
		{name: "huge", in: "99999999999999999999:1", wantErr: "out of range"},
		{name: "not a number", in: "http:80", wantErr: `"http" is not a number`},
		{name: "sign", in: "+80:80", wantErr: "is not a number"},
		{name: "three parts", in: "1:2:3", wantErr: `"2:3" is not a number`},
		{name: "spaces", in: " 80:80", wantErr: "is not a number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePortMapping(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParsePortMapping(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParsePortMapping(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if back, err := ParsePortMapping(got.String()); err != nil || back != got {
				t.Fatalf("round trip of %v: %v, %v", got, back, err)
			}
		})
	}
}

func TestParsePortMappings(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		wantLen int
		wantErr string
	}{
		{name: "two", in: []string{"8155:8155", "9000:9001"}, wantLen: 2},
		{name: "same local twice is fine", in: []string{"80:8080", "81:8080"}, wantLen: 2},
		{name: "none", in: nil, wantErr: "at least one port mapping"},
		{name: "remote twice", in: []string{"80:8080", "80:9090"}, wantErr: "remote port 80 is mapped twice"},
		{name: "bad one", in: []string{"80:8080", "x"}, wantErr: `port mapping "x"`},
		{name: "too many", in: strings.Split("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17", " "), wantErr: "at most 16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePortMappings(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || len(got) != tt.wantLen {
				t.Fatalf("got %v, %v; want %d mappings", got, err, tt.wantLen)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	http := []PortMapping{{Remote: 8080, Local: 8080}}
	tcp := []PortMapping{{Remote: 8080, Local: 8080}, {Remote: 5432, Local: 5432, Protocol: ProtocolTCP}}
	rule := []Rule{{Headers: []HeaderMatch{{"x-user", Exact, "john"}}}}
	tests := []struct {
		name    string
		ports   []PortMapping
		rules   []Rule
		wantErr string
	}{
		{name: "http with rules", ports: http, rules: rule},
		{name: "tcp without rules", ports: tcp},
		{name: "tcp with rules", ports: tcp, rules: rule, wantErr: "port 5432 is TCP: header and path rules select HTTP requests"},
		{name: "unknown protocol", ports: []PortMapping{{Remote: 53, Local: 53, Protocol: "UDP"}}, wantErr: `protocol "UDP": want HTTP or TCP`},
		{name: "bad rule", ports: http, rules: []Rule{{}}, wantErr: "rule 1"},
		{name: "no ports", rules: rule, wantErr: "at least one port mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.ports, tt.rules)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v; want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseHeaderMatch(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    HeaderMatch
		wantErr string
	}{
		{name: "plain", in: "x-user:john", want: HeaderMatch{"x-user", Exact, "john"}},
		{name: "value with colon", in: "x-url:http://a", want: HeaderMatch{"x-url", Exact, "http://a"}},
		{name: "spaces trimmed", in: "x-user: john ", want: HeaderMatch{"x-user", Exact, "john"}},
		{name: "empty value", in: "x-debug:", want: HeaderMatch{"x-debug", Exact, ""}},
		{name: "no colon", in: "x-user", wantErr: "want name:value"},
		{name: "empty name", in: ":john", wantErr: "header name is empty"},
		{name: "bad name", in: "x user:john", wantErr: "not a valid HTTP header name"},
		{name: "newline in value", in: "x-user:a\nb", wantErr: "control character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseHeaderMatch(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestParsePathMatch(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{name: "prefix", in: "/items"},
		{name: "root", in: "/"},
		{name: "relative", in: "items", wantErr: "must start with /"},
		{name: "empty", in: "", wantErr: "must start with /"},
		{name: "too long", in: "/" + strings.Repeat("a", MaxValueLen), wantErr: "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePathMatch(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != (PathMatch{Prefix, tt.in}) {
				t.Fatalf("got %v, %v", got, err)
			}
		})
	}
}

func TestValidateRules(t *testing.T) {
	tests := []struct {
		name    string
		rules   []Rule
		wantErr string
	}{
		{name: "no rules take everything", rules: nil},
		{name: "header and path", rules: []Rule{{Headers: []HeaderMatch{{"x-user", Exact, "john"}}, Path: &PathMatch{Prefix, "/items"}}}},
		{name: "regex path", rules: []Rule{{Path: &PathMatch{RegularExpression, `^/items/[0-9]+$`}}}},
		{name: "regex header", rules: []Rule{{Headers: []HeaderMatch{{"x-user", RegularExpression, "^j.*"}}}}},
		{name: "empty rule", rules: []Rule{{}}, wantErr: "rule 1: a rule needs at least one header or path match"},
		{name: "bad regex", rules: []Rule{{Path: &PathMatch{RegularExpression, "(["}}}, wantErr: "invalid regular expression"},
		{name: "empty regex", rules: []Rule{{Headers: []HeaderMatch{{"x", RegularExpression, ""}}}}, wantErr: "regular expression is empty"},
		{name: "bad type", rules: []Rule{{Headers: []HeaderMatch{{"x", "Glob", "a*"}}}}, wantErr: `type "Glob"`},
		{name: "second rule bad", rules: []Rule{{Path: &PathMatch{Exact, "/a"}}, {Path: &PathMatch{Exact, "a"}}}, wantErr: "rule 2: path match"},
		{name: "too many", rules: make([]Rule, MaxRules+1), wantErr: "at most 16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateRules(tt.rules)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v; want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestClientName(t *testing.T) {
	tests := []struct {
		name    string
		user    string
		want    string
		wantErr bool
	}{
		{name: "email", user: "John@Gefyra.dev", want: "john-gefyra.dev"},
		{name: "plain", user: "alice", want: "alice"},
		{name: "service account", user: "system:serviceaccount:ci:deployer", want: "system-serviceaccount-ci-deployer"},
		{name: "plus and underscore", user: "a_b+c", want: "a-b-c"},
		{name: "empty", user: "", wantErr: true},
		{name: "leading dash", user: "@x", wantErr: true},
		{name: "unicode", user: "jürgen", wantErr: true},
		{name: "too long", user: strings.Repeat("a", 254), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ClientName(tt.user)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ClientName(%q) = %q; want an error", tt.user, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ClientName(%q) = %q, %v; want %q", tt.user, got, err, tt.want)
			}
		})
	}
}

func FuzzParsePortMapping(f *testing.F) {
	for _, s := range []string{"8155:8155", "80", "0:1", "65535:65535", ":", "1:2:3", "-1:5", "١:2",
		"5432:5432/tcp", "6379/TCP", "80:80/http", "80:80/", "53:53/udp", "/tcp", "1:2/tcp/x", "1:2/ｔcp"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePortMapping(s)
		if err != nil {
			return
		}
		if p.Remote == 0 || p.Local == 0 {
			t.Fatalf("ParsePortMapping(%q) accepted a zero port: %v", s, p)
		}
		if p.Protocol != "" && p.Protocol != ProtocolTCP {
			t.Fatalf("ParsePortMapping(%q) = %v: protocol %q", s, p, p.Protocol)
		}
		if err := ValidatePorts([]PortMapping{p}); err != nil {
			t.Fatalf("ParsePortMapping(%q) = %v, which does not validate: %v", s, p, err)
		}
		back, err := ParsePortMapping(p.String())
		if err != nil || back != p {
			t.Fatalf("round trip of %q: %v -> %q -> %v, %v", s, p, p.String(), back, err)
		}
	})
}

func FuzzParseHeaderMatch(f *testing.F) {
	for _, s := range []string{"x-user:john", "a:", ":", "x user:1", "x:\r\n", "k:v:w"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseHeaderMatch(s)
		if err != nil {
			return
		}
		if err := h.Validate(); err != nil {
			t.Fatalf("ParseHeaderMatch(%q) returned %v, which does not validate: %v", s, h, err)
		}
		if strings.ContainsAny(h.Value, "\r\n\x00") {
			t.Fatalf("value with control characters accepted: %q", h.Value)
		}
	})
}

func FuzzValidatePathMatch(f *testing.F) {
	for _, s := range []string{"/", "/items", "^/a+$", "([", ""} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, s string, regex bool) {
		typ := Prefix
		if regex {
			typ = RegularExpression
		}
		r := Rule{Path: &PathMatch{Type: typ, Value: s}}
		if err := r.Validate(); err == nil && !regex && !strings.HasPrefix(s, "/") {
			t.Fatalf("path %q without a leading / accepted", s)
		}
	})
}

func FuzzClientName(f *testing.F) {
	for _, s := range []string{"john@gefyra.dev", "system:serviceaccount:a:b", "", "-", "A_B"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, err := ClientName(s)
		if err != nil {
			return
		}
		if !dnsSubdomain.MatchString(name) || len(name) > 253 {
			t.Fatalf("ClientName(%q) = %q, not a valid object name", s, name)
		}
	})
}
