package profile

import "testing"

func TestTrimTop(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "header dropped", in: "File: xds.test\nType: cpu\nTime: now\nShowing nodes accounting for 1s, 100% of 1s total\n      flat  flat%\n", want: "Showing nodes accounting for 1s, 100% of 1s total\n      flat  flat%"},
		{name: "dropped nodes line first", in: "Type: inuse_space\nDropped 3 nodes (cum <= 1MB)\nShowing nodes accounting for 2MB\n", want: "Dropped 3 nodes (cum <= 1MB)\nShowing nodes accounting for 2MB"},
		{name: "no table", in: "something else\n", want: "something else"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := TrimTop(tt.in); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}
