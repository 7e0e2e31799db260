package testworld

// T is what the helpers of this package need from their caller. *testing.T
// and *testing.B satisfy it, and so does a program that runs the same steps
// outside `go test` and narrates them (demo/story's Runner). As in a test,
// Fatalf ends the calling goroutine's step and Cleanup functions run last
// in, first out when the caller is done.
type T interface {
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Failed reports whether t has failed, for callers that report it
// (testing.TB does); a T that cannot tell counts as not failed.
func Failed(t T) bool {
	f, ok := t.(interface{ Failed() bool })
	return ok && f.Failed()
}
