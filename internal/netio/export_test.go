package netio

// GoJoin is Join with a goroutine per direction, also where the relay
// loop would take the pair, so the tests cover both.
var GoJoin = goJoin

// HasLoop reports whether Join uses the relay loop here.
func HasLoop() bool { return theLoop() != nil }

// LoopBusy reports whether the relay loop's goroutine is running.
var LoopBusy = loopBusy
