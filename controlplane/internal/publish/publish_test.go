package publish

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"gefyra.dev/gefyra/controlplane/internal/model"
)

// recorder is a Publisher that keeps what it got.
type recorder struct {
	mu  sync.Mutex // guards the fields below
	got []string
	ch  chan struct{}
}

func (r *recorder) Publish(_ context.Context, m *model.Model) error {
	r.mu.Lock()
	r.got = append(r.got, m.Clients[0].Name)
	r.mu.Unlock()
	r.ch <- struct{}{}
	return nil
}

func (r *recorder) published() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

func TestBatcherCoalescesBurstAndPublishesLatest(t *testing.T) {
	var state atomic.Value
	state.Store("v0")
	rec := &recorder{ch: make(chan struct{}, 100)}
	reg := prometheus.NewRegistry()
	b := New(Batcher{
		Holdoff:  50 * time.Millisecond,
		MaxDelay: 10 * time.Second,
		Build: func(context.Context) (*model.Model, error) {
			return &model.Model{Clients: []model.Client{{Name: state.Load().(string)}}}, nil
		},
		Publisher: rec,
		Metrics:   NewMetrics(reg),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- b.Run(ctx) }()
	<-rec.ch // the initial publish
	const burst = 200
	for i := range burst {
		state.Store("v" + string(rune('a'+i%26)))
		b.Notify()
	}
	state.Store("final")
	b.Notify()
	deadline := time.After(10 * time.Second)
	for {
		got := rec.published()
		if got[len(got)-1] == "final" {
			if len(got) > 1+burst/2 {
				t.Errorf("%d publishes for a burst of %d events: not batched", len(got)-1, burst+1)
			}
			break
		}
		select {
		case <-rec.ch:
		case <-deadline:
			t.Fatalf("the final state was never published; got %v", rec.published())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(b.Metrics.Events); n != burst+1 {
		t.Errorf("events counted %v, want %d", n, burst+1)
	}
}

func TestBatcherMaxDelayBoundsAContinuousStream(t *testing.T) {
	rec := &recorder{ch: make(chan struct{}, 100)}
	var n atomic.Int64
	b := New(Batcher{
		Holdoff:  200 * time.Millisecond,
		MaxDelay: 400 * time.Millisecond,
		Build: func(context.Context) (*model.Model, error) {
			return &model.Model{Clients: []model.Client{{Name: "x"}}}, nil
		},
		Publisher: rec,
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx)
	<-rec.ch
	// Events every 20ms, closer than the holdoff, for as long as it takes:
	// only MaxDelay can let a publish through.
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				n.Add(1)
				b.Notify()
			}
		}
	}()
	select {
	case <-rec.ch:
	case <-time.After(20 * time.Second):
		t.Fatal("no publish during a continuous stream of events: MaxDelay not honoured")
	}
	close(stop)
	if n.Load() == 0 {
		t.Fatal("no events were sent")
	}
}

func TestBatcherKeepsLastGoodAndRetriesAfterErrors(t *testing.T) {
	rec := &recorder{ch: make(chan struct{}, 100)}
	var fail atomic.Bool
	fail.Store(true)
	var builds atomic.Int64
	reg := prometheus.NewRegistry()
	b := New(Batcher{
		Holdoff:  10 * time.Millisecond,
		MaxDelay: 50 * time.Millisecond,
		Build: func(context.Context) (*model.Model, error) {
			if builds.Add(1) >= 3 {
				fail.Store(false)
			}
			if fail.Load() {
				return nil, errors.New("inconsistent")
			}
			return &model.Model{Clients: []model.Client{{Name: "good"}}}, nil
		},
		Publisher: rec,
		Metrics:   NewMetrics(reg),
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx)
	select {
	case <-rec.ch:
	case <-time.After(20 * time.Second):
		t.Fatal("never retried after build errors")
	}
	if got := rec.published(); len(got) != 1 || got[0] != "good" {
		t.Fatalf("published %v; want only the good model", got)
	}
	if n := testutil.ToFloat64(b.Metrics.Publishes.WithLabelValues("build_error")); n < 2 {
		t.Errorf("build errors counted %v, want at least 2", n)
	}
}
