package carrierimage_test

import (
	"path"
	"slices"
	"testing"

	"gefyra.dev/gefyra/internal/carrierimage"
)

func TestPaths(t *testing.T) {
	ps := carrierimage.Paths()
	if !slices.IsSorted(ps) {
		t.Fatal("Paths is not sorted")
	}
	for i, p := range ps {
		if !path.IsAbs(p) || path.Clean(p) != p || p == carrierimage.Binary || (i > 0 && ps[i-1] == p) {
			t.Fatalf("bad or duplicate path %q", p)
		}
		if !carrierimage.Has(p) {
			t.Fatalf("Has(%q) = false for a path of Paths", p)
		}
	}
	for _, must := range []string{"/usr/local/bin/uvicorn", "/bin/sh", "/bin/cat", "/usr/bin/python3", "/bin/grpc_health_probe", "/app/server"} {
		if !slices.Contains(ps, must) {
			t.Errorf("%s missing", must)
		}
	}
	// Callers get a copy.
	ps[0] = "/changed"
	if carrierimage.Paths()[0] == "/changed" {
		t.Fatal("Paths returns the package's own slice")
	}
}

func TestHas(t *testing.T) {
	tests := []struct {
		name string
		path string
		want bool
	}{
		{name: "the binary", path: "/carrier", want: true},
		{name: "a shell", path: "/bin/sh", want: true},
		{name: "an app server", path: "/usr/local/bin/uvicorn", want: true},
		{name: "unclean but the same file", path: "/usr//bin/../bin/python3", want: true},
		{name: "a program the image lacks", path: "/opt/app/run", want: false},
		{name: "a directory", path: "/usr/bin", want: false},
		{name: "a trailing slash", path: "/bin/sh/", want: false},
		{name: "relative", path: "bin/sh", want: false},
		{name: "empty", path: "", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := carrierimage.Has(tt.path); got != tt.want {
				t.Fatalf("Has(%q) = %v, want %v", tt.path, got, tt.want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name             string
		command, pathEnv string
		workdir          string
		wantFile         string
		wantOK           bool
	}{
		{name: "absolute", command: "/app/server", pathEnv: carrierimage.PATH, wantFile: "/app/server", wantOK: true},
		{name: "absolute, missing", command: "/opt/app/run", pathEnv: carrierimage.PATH, wantFile: "/opt/app/run"},
		{name: "bare name through the image's PATH", command: "uvicorn", pathEnv: carrierimage.PATH, wantFile: "/usr/local/bin/uvicorn", wantOK: true},
		{name: "bare name, first directory wins", command: "sh", pathEnv: carrierimage.PATH, wantFile: "/usr/local/bin/sh", wantOK: true},
		{name: "bare name the image lacks", command: "myapp", pathEnv: carrierimage.PATH},
		{name: "bare name, the container's PATH misses the image's directories", command: "python3", pathEnv: "/opt/venv/bin:/opt/conda/bin"},
		{name: "bare name, the container's PATH reaches one", command: "python3", pathEnv: "/opt/venv/bin:/usr/bin", wantFile: "/usr/bin/python3", wantOK: true},
		{name: "bare name, no PATH at all", command: "sh", pathEnv: ""},
		{name: "bare name, relative PATH entry", command: "server", pathEnv: "bin:.", workdir: "/app", wantFile: "/app/server", wantOK: true},
		{name: "relative with a slash ignores PATH", command: "./server", pathEnv: carrierimage.PATH, workdir: "/app", wantFile: "/app/server", wantOK: true},
		{name: "relative to the image's working directory", command: "app/main", pathEnv: carrierimage.PATH, wantFile: "/app/main", wantOK: true},
		{name: "relative, missing", command: "./run.sh", pathEnv: carrierimage.PATH, workdir: "/srv", wantFile: "/srv/run.sh"},
		{name: "a directory name", command: "..", pathEnv: carrierimage.PATH},
		{name: "empty", command: "", pathEnv: carrierimage.PATH},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, ok := carrierimage.Resolve(tt.command, tt.pathEnv, tt.workdir)
			if f != tt.wantFile || ok != tt.wantOK {
				t.Fatalf("Resolve(%q, %q, %q) = %q, %v; want %q, %v", tt.command, tt.pathEnv, tt.workdir, f, ok, tt.wantFile, tt.wantOK)
			}
		})
	}
}

func FuzzResolve(f *testing.F) {
	f.Add("uvicorn", carrierimage.PATH, "")
	f.Add("./server", "", "/app")
	f.Add("../../bin/sh", "::", "relative")
	f.Add("/bin/sh/", "/bin", "/")
	f.Fuzz(func(t *testing.T, command, pathEnv, workdir string) {
		file, ok := carrierimage.Resolve(command, pathEnv, workdir)
		if ok && (!path.IsAbs(file) || !carrierimage.Has(file)) {
			t.Fatalf("Resolve(%q, %q, %q) = %q, true: not a program of the image", command, pathEnv, workdir, file)
		}
	})
}
