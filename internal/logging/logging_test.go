package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		name, level, format string
		wantErr             string
		wantJSON            bool
		debugShown          bool
	}{
		{name: "default is json info off a terminal", wantJSON: true},
		{name: "text debug", level: "debug", format: "text", debugShown: true},
		{name: "upper case", level: "WARN", format: "JSON", wantJSON: true},
		{name: "bad level", level: "loud", wantErr: `log level "loud"`},
		{name: "bad format", format: "xml", wantErr: `log format "xml"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := New(Options{Level: tc.level, Format: tc.format, Out: &buf})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			log.Debug("dbg")
			log.Error("boom", "k", "v")
			out := buf.String()
			if strings.Contains(out, "dbg") != tc.debugShown {
				t.Errorf("debug shown = %v, want %v: %q", !tc.debugShown, tc.debugShown, out)
			}
			last := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])
			var m map[string]any
			isJSON := json.Unmarshal([]byte(last), &m) == nil
			if isJSON != tc.wantJSON {
				t.Errorf("json = %v, want %v: %q", isJSON, tc.wantJSON, last)
			}
			if !strings.Contains(last, "boom") {
				t.Errorf("error line missing: %q", out)
			}
		})
	}
}
