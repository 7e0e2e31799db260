package story

import (
	"strings"
	"testing"
)

func TestMissingClaim(t *testing.T) {
	tests := []struct {
		name string
		logs string
		want string
	}{
		{name: "the backend's line", want: "Email", logs: `{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"Application running on http://[::]:8155 (Press CTRL+C to quit)"}
{"time":"2026-01-01T00:00:01Z","level":"ERROR","msg":"claim missing from access token","claim":"Email","error":"KeyError: 'Email'","claims":["aud","email","exp"]}
{"time":"2026-01-01T00:00:01Z","level":"INFO","msg":"10.244.0.5:4711 - \"GET /items/123 HTTP/1.1\" 500 Internal Server Error"}
`},
		{name: "the last one counts", want: "mail", logs: `{"msg":"claim missing from access token","claim":"Email"}` + "\n" + `{"msg":"claim missing from access token","claim":"mail"}`},
		{name: "no such line", want: "", logs: `{"level":"INFO","msg":"Application running"}` + "\n"},
		{name: "slog's text format", want: "Email", logs: `time=2026-01-01T00:00:01Z level=ERROR msg="claim missing from access token" claim=Email error="KeyError: 'Email'" claims="[aud email exp]"` + "\n"},
		{name: "a quoted claim in text", want: "e mail", logs: `level=ERROR msg="claim missing from access token" claim="e mail" claims="[x]"`},
		{name: "other text lines", want: "", logs: `level=INFO msg="Application running" claim=Email`},
		{name: "a line without the claim", want: "", logs: `{"msg":"claim missing from access token"}`},
		{name: "empty", want: "", logs: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MissingClaim(tt.logs); got != tt.want {
				t.Errorf("MissingClaim() = %q, want %q", got, tt.want)
			}
		})
	}
}

func FuzzMissingClaim(f *testing.F) {
	f.Add(`{"msg":"claim missing from access token","claim":"Email"}`)
	f.Add("{\"msg\":1}\n{}\nnot json\n")
	f.Add(`{"msg":"claim missing from access token","claim":{"x":1}}`)
	f.Add(`level=ERROR msg="claim missing from access token" claim="\x" claims=[]`)
	f.Fuzz(func(t *testing.T, logs string) {
		got := MissingClaim(logs)
		if got != "" && !strings.Contains(logs, "claim missing from access token") {
			t.Fatalf("MissingClaim(%q) = %q without the backend's message", logs, got)
		}
	})
}
