package wgnet

import (
	"fmt"
	"io"
	"net"
	"testing"
)

// BenchmarkTunnelThroughput streams from one endpoint to the other over
// loopback UDP; b.SetBytes makes `go test` print MB/s.
func BenchmarkTunnelThroughput(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			a, z := newPairWith(b, bc.mtu, bc.stock)
			l, err := z.Listen("tcp", ":5001")
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			done := make(chan int64, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					done <- -1
					return
				}
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				done <- n
			}()
			c := dialT(b, a, z.Address(), 5001)
			buf := make([]byte, 64<<10)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			c.(interface{ CloseWrite() error }).CloseWrite()
			if n := <-done; n != int64(b.N)*int64(len(buf)) {
				b.Fatalf("received %d bytes, want %d", n, int64(b.N)*int64(len(buf)))
			}
			b.StopTimer()
		})
	}
}

// BenchmarkTunnelRoundTrip measures one small request and its reply
// through the tunnel.
func BenchmarkTunnelRoundTrip(b *testing.B) {
	for _, stock := range []bool{true, false} {
		name := "tun=batched"
		if stock {
			name = "tun=stock"
		}
		b.Run(name, func(b *testing.B) {
			a, z := newPairWith(b, 0, stock)
			l, err := z.Listen("tcp", ":5002")
			if err != nil {
				b.Fatal(err)
			}
			echo(b, l)
			c := dialT(b, a, z.Address(), 5002)
			roundTrips(b, c)
		})
	}
}

// benchCases compare wireguard-go's stock netstack TUN with the batched
// one, at the default MTU and a jumbo one.
var benchCases = func() []struct {
	name  string
	mtu   int
	stock bool
} {
	var out []struct {
		name  string
		mtu   int
		stock bool
	}
	for _, stock := range []bool{true, false} {
		for _, mtu := range []int{1420, 8920} {
			kind := "batched"
			if stock {
				kind = "stock"
			}
			out = append(out, struct {
				name  string
				mtu   int
				stock bool
			}{fmt.Sprintf("tun=%s/mtu=%d", kind, mtu), mtu, stock})
		}
	}
	return out
}()

func roundTrips(b *testing.B, c net.Conn) {
	buf := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}
