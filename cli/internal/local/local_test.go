package local_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gefyra.dev/gefyra/cli/internal/clitest"
	"gefyra.dev/gefyra/cli/internal/local"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

type reply struct {
	Greeting string   `json:"greeting"`
	Args     []string `json:"args"`
	Host     string   `json:"host"`
	Env      string   `json:"env"`
	File     string   `json:"file"`
}

func get(url string) (reply, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	var r reply
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("%s", resp.Status)
	}
	return r, json.NewDecoder(resp.Body).Decode(&r)
}

func TestRunServesOnItsIP(t *testing.T) {
	eng := clitest.Docker(t)
	image := clitest.ServerImage(t, eng)
	ctx := ctxT(t)
	created, err := eng.EnsureNetwork(ctx)
	if err != nil || !created {
		t.Fatalf("EnsureNetwork = %v, %v; want a new network", created, err)
	}
	if again, err := eng.EnsureNetwork(ctx); err != nil || again {
		t.Fatalf("second EnsureNetwork = %v, %v; want the existing network", again, err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "note.txt"), []byte("from the host"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := eng.Run(ctx, local.RunSpec{
		Name:      clitest.RandomName("srv-"),
		Image:     image,
		Cmd:       []string{"/server", "--greeting", "hello world"},
		Env:       []string{"COLOR=blue"},
		Mounts:    []local.Mount{{Source: dir, Target: "/data", ReadOnly: true}},
		Namespace: "oauth2-demo",
		Labels:    clitest.TestLabels,
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.IP == "" || !c.Running() {
		t.Fatalf("container = %+v, want running with an IP", c)
	}
	var r reply
	clitest.Eventually(t, 20*time.Second, "the server answers on its IP", func() (err error) {
		r, err = get("http://" + c.IP + ":8155/x?env=COLOR&file=/data/note.txt")
		return err
	})
	if r.Greeting != "hello world" || r.Env != "blue" || r.File != "from the host" {
		t.Fatalf("reply = %+v, want the greeting, env and mounted file", r)
	}
	list, err := eng.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != c.Name || list[0].Namespace != "oauth2-demo" || list[0].IP != c.IP || list[0].Role != local.RoleContainer {
		t.Fatalf("List = %+v, want just %s in oauth2-demo at %s", list, c.Name, c.IP)
	}
	if _, err := eng.RemoveNetwork(ctx); err != nil {
		t.Fatal(err)
	}
	if info, _ := eng.NetworkInfo(ctx); !info.Exists {
		t.Fatal("the network was removed while a container used it")
	}
	removed, err := eng.RemoveManaged(ctx, "")
	if err != nil || len(removed) != 1 || removed[0] != c.Name {
		t.Fatalf("RemoveManaged = %v, %v; want [%s]", removed, err, c.Name)
	}
	if ok, err := eng.RemoveNetwork(ctx); err != nil || !ok {
		t.Fatalf("RemoveNetwork = %v, %v; want it removed", ok, err)
	}
}

func TestRunFailuresLeaveNothing(t *testing.T) {
	eng := clitest.Docker(t)
	image := clitest.ServerImage(t, eng)
	ctx := ctxT(t)
	if _, err := eng.EnsureNetwork(ctx); err != nil {
		t.Fatal(err)
	}
	taken := clitest.RandomName("taken-")
	if _, err := eng.Run(ctx, local.RunSpec{Name: taken, Image: image, Labels: clitest.TestLabels}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		spec    local.RunSpec
		wantErr error
		wantMsg string
	}{
		{name: "name taken", spec: local.RunSpec{Name: taken, Image: image}, wantErr: local.ErrNameTaken, wantMsg: "docker rm -f " + taken},
		{name: "image missing", spec: local.RunSpec{Name: clitest.RandomName("x-"), Image: "gefyra.dev/no-such-image:0"}, wantErr: local.ErrImageMissing,
			wantMsg: "image gefyra.dev/no-such-image:0 not found locally: build or load it first"},
		{name: "no such executable", spec: local.RunSpec{Name: clitest.RandomName("x-"), Image: image, Entrypoint: []string{"bash"}}, wantMsg: `cannot start: image ` + image + ` has no "bash"`},
		{name: "exits at once", spec: local.RunSpec{Name: clitest.RandomName("x-"), Image: image, Cmd: []string{"/server", "--listen", "no-port"}}, wantMsg: "exited at once"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.Labels = clitest.TestLabels
			_, err := eng.Run(ctx, tt.spec)
			if err == nil {
				t.Fatal("Run succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Run: %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Run: %v, want it to say %q", err, tt.wantMsg)
			}
			list, err := eng.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 1 || list[0].Name != taken {
				t.Fatalf("containers after the failure: %+v, want only %s", list, taken)
			}
		})
	}
}

func TestExec(t *testing.T) {
	eng := clitest.Docker(t)
	image := clitest.ServerImage(t, eng)
	ctx := ctxT(t)
	if _, err := eng.EnsureNetwork(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := eng.Run(ctx, local.RunSpec{Name: clitest.RandomName("exec-"), Image: image, Labels: clitest.TestLabels})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eng.Exec(ctx, c.Name, []string{"/server", "-h"}); err != nil {
		t.Fatalf("exec with exit code 0: %v", err)
	}
	_, err = eng.Exec(ctx, c.Name, []string{"/server", "-no-such-flag"})
	if err == nil || !strings.Contains(err.Error(), "exit code 2") || !strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("exec of a failing command: %v, want its exit code and stderr", err)
	}
}

func TestConnectWithoutDocker(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	t.Setenv("DOCKER_HOST", "unix://"+sock)
	_, err := local.Connect(context.Background(), "")
	if !errors.Is(err, local.ErrDockerUnavailable) {
		t.Fatalf("Connect: %v, want ErrDockerUnavailable", err)
	}
	for _, want := range []string{sock, "start Docker"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("Connect: %q, want it to mention %q", err, want)
		}
	}
}
