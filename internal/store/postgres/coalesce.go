package postgres

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
)

// A coalescer lets concurrent calls of one kind share statements. At most
// max groups of calls run at once; a call that arrives while they all run
// waits in a queue, and as a group finishes, the queue's next group
// (chosen by take) runs, in a goroutine of its own. So a call never waits
// while it could run at once: an idle engine runs each call as it comes,
// alone, in the caller's goroutine. Under load one round trip, one
// executor start and one commit serve many calls, and a call that gives up
// while its group runs returns at once.
//
// A call joins a group only once it has arrived, so the statements that
// serve it start after it did: a group's outcome is one the call could
// have had alone, run at that moment.
type coalescer[C any] struct {
	mu      sync.Mutex
	max     int // most groups running at once
	running int // groups under way
	queue   []*waiting[C]

	// take chooses, from a queue that is not empty, the next group: some
	// of its calls; the rest wait on, in order. It may return subslices
	// of queue.
	take func(queue []*waiting[C]) (group, rest []*waiting[C])
	// run serves a group, every call of which gets its outcome (C holds
	// it). It runs until every call of the group has given up on it.
	run func(group []*waiting[C])

	// calls and groups count the calls served and the groups run for
	// them, alone ones included.
	calls, groups atomic.Int64
}

// waiting is a call of a coalescer.
type waiting[C any] struct {
	ctx  context.Context
	call C
	// done is signaled once the call has its outcome, unless the call
	// runs in its caller's goroutine.
	done chan struct{}
}

// do runs call, alone or in a group, and returns once it has its outcome,
// or with ctx's error once ctx has ended: if the call was still queued
// nothing was tried; otherwise a group may have served it, or may still.
// queued, unless nil, is called on call before it waits in the queue.
func (co *coalescer[C]) do(ctx context.Context, call C, queued func(C)) error {
	w := &waiting[C]{ctx: ctx, call: call}
	co.mu.Lock()
	if co.running < co.max {
		co.running++
		co.mu.Unlock()
		co.serve([]*waiting[C]{w}, w)
		return nil
	}
	co.mu.Unlock()
	if queued != nil {
		queued(call)
	}
	w.done = make(chan struct{}, 1)
	co.mu.Lock()
	if co.running < co.max { // a group finished meanwhile
		co.running++
		co.mu.Unlock()
		co.serve([]*waiting[C]{w}, w)
		return nil
	}
	co.queue = append(co.queue, w)
	co.mu.Unlock()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		co.mu.Lock()
		defer co.mu.Unlock()
		for i, q := range co.queue {
			if q == w {
				co.queue = slices.Delete(co.queue, i, i+1)
				return ctx.Err() // nothing was tried
			}
		}
		return ctx.Err() // a group has it
	}
}

// serve runs group, signals its calls (but self, whose caller runs serve)
// and then, while calls wait, starts the next group; otherwise it gives
// up its turn.
func (co *coalescer[C]) serve(group []*waiting[C], self *waiting[C]) {
	co.calls.Add(int64(len(group)))
	co.groups.Add(1)
	co.run(group)
	for _, w := range group {
		if w != self {
			w.done <- struct{}{}
		}
	}
	co.mu.Lock()
	defer co.mu.Unlock()
	if len(co.queue) == 0 {
		co.running--
		return
	}
	next, rest := co.take(co.queue)
	next = append([]*waiting[C](nil), next...)
	co.setQueue(rest)
	go co.serve(next, nil)
}

// setQueue makes rest, which may share co.queue's array, the queue, and
// lets go of the calls past it.
func (co *coalescer[C]) setQueue(rest []*waiting[C]) {
	n := copy(co.queue, rest)
	clear(co.queue[n:])
	co.queue = co.queue[:n]
}

// groupContext returns a context for a statement that serves group: it
// ends once every call of the group has given up on it. stop releases
// what it holds.
func groupContext[C any](group []*waiting[C]) (ctx context.Context, stop func()) {
	if len(group) == 1 {
		return group[0].ctx, func() {} // a call alone: its own
	}
	ctx, cancel := context.WithCancel(context.Background())
	left := len(group)
	var mu sync.Mutex
	stops := make([]func() bool, len(group))
	for i, w := range group {
		stops[i] = context.AfterFunc(w.ctx, func() {
			mu.Lock()
			defer mu.Unlock()
			if left--; left == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, s := range stops {
			s()
		}
		cancel()
	}
}
