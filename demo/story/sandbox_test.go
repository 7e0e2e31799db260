package story

import (
	"context"
	"slices"
	"testing"

	"gefyra.dev/gefyra/internal/testworld"
)

func TestRunnerKeep(t *testing.T) {
	tests := []struct {
		name    string
		keep    bool
		wantRan []string
	}{
		{name: "without Keep the cleanups run", wantRan: []string{"cleanup two", "cleanup one"}},
		{name: "after Keep what the steps made stays", keep: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ran []string
			var out syncBuffer
			r := NewRunner(context.Background(), &out)
			r.Step("one", func(t testworld.T) { t.Cleanup(func() { ran = append(ran, "cleanup one") }) })
			r.Step("two", func(t testworld.T) { t.Cleanup(func() { ran = append(ran, "cleanup two") }) })
			if tt.keep {
				r.Keep()
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ran, tt.wantRan) {
				t.Fatalf("ran %q, want %q (output %q)", ran, tt.wantRan, out.String())
			}
		})
	}
}
