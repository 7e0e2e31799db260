package appsrc

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"gefyra.dev/gefyra/demo/internal/testproc"
)

// listenLine matches the backend's startup log line; its submatch is the
// listen address.
var listenLine = regexp.MustCompile(`Application running on http://(\S+) `)

// TestOneLineFix does to a copy of the backend what the tutorial's developer
// does to the mounted source: apply the fix with sed, build the directory
// alone and run it. The unfixed copy, built the same way, still answers 500.
func TestOneLineFix(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"email": "john@gefyra.dev", "email_verified": true, "preferred_username": "john@gefyra.dev",
		"exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		fix        bool
		wantStatus int
		wantBody   string
		wantLog    string
	}{
		{name: "as shipped", fix: false, wantStatus: 500, wantBody: "Internal Server Error", wantLog: "claim=Email"},
		{name: "fixed with sed", fix: true, wantStatus: 200, wantBody: `{"item_id":123,"Email":"john@gefyra.dev"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			bin := filepath.Join(t.TempDir(), "oauth2-demo")
			if err := Build(ctx, bin, tc.fix); err != nil {
				t.Fatal(err)
			}
			p, addr := testproc.Start(t, "backend", exec.Command(bin, "-host", "127.0.0.1", "-port", "0"), listenLine)
			req, _ := http.NewRequest("GET", "http://"+addr+"/items/123", nil)
			req.Header.Set("X-Forwarded-Access-Token", token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus || string(body) != tc.wantBody {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, body, tc.wantStatus, tc.wantBody)
			}
			if tc.wantLog != "" && !p.WaitOutput(tc.wantLog, 5*time.Second) {
				t.Fatalf("log lacks %q:\n%s", tc.wantLog, p.Output())
			}
		})
	}
}

func TestFixRefuses(t *testing.T) {
	tests := []struct {
		name, src, wantErr string
	}{
		{name: "already fixed", src: "package main\n\nconst emailClaim = \"email\"\n", wantErr: "on 0 lines"},
		{name: "named twice", src: "package main\n\nconst emailClaim = \"Email\"\n// emailClaim = \"Email\"\n", wantErr: "on 2 lines"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(tc.src), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := Fix(context.Background(), dir); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestModuleFiles(t *testing.T) {
	sum := "github.com/golang-jwt/jwt/v5 v5.3.0 h1:old=\n" +
		"github.com/golang-jwt/jwt/v5 v5.3.1 h1:abc=\n" +
		"github.com/golang-jwt/jwt/v5 v5.3.1/go.mod h1:def=\n" +
		"golang.org/x/net v0.1.0 h1:x=\n"
	gomod, gosum, err := ModuleFiles([]byte(sum))
	if err != nil {
		t.Fatal(err)
	}
	if want := "github.com/golang-jwt/jwt/v5 v5.3.1 h1:abc=\ngithub.com/golang-jwt/jwt/v5 v5.3.1/go.mod h1:def=\n"; string(gosum) != want {
		t.Errorf("go.sum = %q, want %q", gosum, want)
	}
	if !strings.Contains(string(gomod), "require github.com/golang-jwt/jwt/v5 v5.3.1") {
		t.Errorf("go.mod = %q", gomod)
	}
	if _, _, err := ModuleFiles([]byte("golang.org/x/net v0.1.0 h1:x=\n")); err == nil {
		t.Error("no error for a go.sum without jwt")
	}
}

func TestCopySkipsTests(t *testing.T) {
	root, err := RepoRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := Copy(filepath.Join(root, "demo", "app"), dst); err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(dst, "*"))
	if len(names) == 0 {
		t.Fatal("nothing copied")
	}
	for _, n := range names {
		if strings.HasSuffix(n, "_test.go") || !strings.HasSuffix(n, ".go") {
			t.Errorf("copied %s", n)
		}
	}
	if err := Copy(t.TempDir(), dst); err == nil {
		t.Error("copying an empty directory succeeded")
	}
}
