package httpproxy

import "gefyra.dev/gefyra/internal/netio"

// LoopIdle is the number of idle upstream connections p keeps on the
// event loop, or -1 where there is no loop.
func LoopIdle(p *Proxy) int {
	loop := netio.Shared()
	if loop == nil {
		return -1
	}
	n := make(chan int, 1)
	loop.Post(func() {
		total := 0
		if p.lpools != nil {
			for _, pl := range p.lpools.pools {
				total += len(pl.idle)
			}
		}
		n <- total
	})
	return <-n
}
