package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestServeAndGet(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: handler("web")}
	go hs.Serve(ln)
	defer hs.Close()

	var out bytes.Buffer
	urls := []string{"http://" + ln.Addr().String() + "/", "http://127.0.0.1:1/"}
	err = getAll(context.Background(), &out, urls, 2*time.Second)
	if err == nil || !strings.Contains(err.Error(), "1 of 2") {
		t.Fatalf("getAll: %v, want one failure", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("output %q", out.String())
	}
	var ok, bad Result
	json.Unmarshal([]byte(lines[0]), &ok)
	json.Unmarshal([]byte(lines[1]), &bad)
	var a Answer
	if err := json.Unmarshal([]byte(ok.Body), &a); err != nil || ok.Status != 200 || a.Name != "web" || !strings.HasPrefix(a.Client, "127.0.0.1:") {
		t.Fatalf("first result %+v (%+v, %v)", ok, a, err)
	}
	if bad.Error == "" || bad.URL != urls[1] {
		t.Fatalf("second result %+v", bad)
	}
}
