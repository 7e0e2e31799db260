package tcptest_test

import (
	"io"
	"testing"

	"gefyra.dev/gefyra/internal/tcptest"
)

func TestPairIsConnected(t *testing.T) {
	a, b := tcptest.Pair(t)
	if a.LocalAddr().String() != b.RemoteAddr().String() || b.LocalAddr().String() != a.RemoteAddr().String() {
		t.Fatalf("ends do not match: %v→%v, %v→%v", a.LocalAddr(), a.RemoteAddr(), b.LocalAddr(), b.RemoteAddr())
	}
	a.Write([]byte("ping"))
	a.CloseWrite()
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "ping" {
		t.Fatalf("read %q, %v", got, err)
	}
}
