package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestServeAndProbe(t *testing.T) {
	t.Setenv("NAME", "app")
	t.Setenv("VERSION", "v9")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, pc) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	base := "http://" + ln.Addr().String()
	setReady := func(ok string) {
		t.Helper()
		resp, err := http.Post(base+"/readiness?ok="+ok, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	tests := []struct {
		name    string
		ready   string // "" leaves readiness as it is
		url     string
		want    string
		wantErr string
	}{
		{name: "info", url: base + "/", want: `"version":"v9"`},
		{name: "healthy", url: base + "/healthz", want: "ok"},
		{name: "unready", ready: "false", url: base + "/healthz", wantErr: "503"},
		{name: "ready again", ready: "true", url: base + "/healthz", want: "ok"},
		{name: "tcp", url: "tcp://" + ln.Addr().String(), want: "connected"},
		{name: "udp echo", url: "udp://" + pc.LocalAddr().String(), want: "app:ping"},
		{name: "unknown path", url: base + "/nope", wantErr: "404"},
		{name: "bad scheme", url: "ftp://x", wantErr: "want an http://"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.ready != "" {
				setReady(tt.ready)
			}
			out, err := probe(tt.url, 2*time.Second)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("probe(%s) = %q, %v; want error with %q", tt.url, out, err, tt.wantErr)
				}
				return
			}
			if err != nil || !strings.Contains(out, tt.want) {
				t.Fatalf("probe(%s) = %q, %v; want %q", tt.url, out, err, tt.want)
			}
		})
	}
}

func TestProbeUDPWithoutEcho(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := probe("udp://"+pc.LocalAddr().String(), 200*time.Millisecond); err == nil {
		t.Fatal("probe succeeded against a socket that never answers")
	}
}
