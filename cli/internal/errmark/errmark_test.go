package errmark

import (
	"errors"
	"io"
	"testing"
)

func TestNew(t *testing.T) {
	kind := errors.New("kind")
	other := errors.New("other")
	tests := []struct {
		name    string
		err     error
		msg     string
		isKind  bool
		isCause error
	}{
		{name: "plain", err: New(kind, "container %s exists", "x"), msg: "container x exists", isKind: true},
		{name: "with cause", err: New(kind, "reading: %w", io.EOF), msg: "reading: EOF", isKind: true, isCause: io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err.Error() != tt.msg {
				t.Errorf("Error() = %q, want %q", tt.err, tt.msg)
			}
			if errors.Is(tt.err, kind) != tt.isKind || errors.Is(tt.err, other) {
				t.Errorf("errors.Is(kind) = %v, want %v", errors.Is(tt.err, kind), tt.isKind)
			}
			if tt.isCause != nil && !errors.Is(tt.err, tt.isCause) {
				t.Errorf("the cause %v is lost", tt.isCause)
			}
		})
	}
}
