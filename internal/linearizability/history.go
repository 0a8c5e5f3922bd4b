package linearizability

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// Recorder collects a history. Timestamps come from one monotonic clock,
// so operations recorded by many goroutines, against many kvd processes,
// are ordered correctly. It is safe for concurrent use.
type Recorder struct {
	start time.Time

	mu  sync.Mutex
	ops []porcupine.Operation
}

// NewRecorder returns an empty recorder whose clock starts now.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// Now is the recorder's clock: nanoseconds since it started, monotonic.
// Take it just before sending a request (call) and just after its answer
// arrived (return).
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

// Record adds an operation by client called at call that returned out at
// ret. An unknown Put or Delete gets return time Infinity; an unknown Get
// is dropped.
func (r *Recorder) Record(client int, in Input, out Output, call, ret int64) {
	if out.Unknown {
		if in.Kind == Get {
			return
		}
		ret = Infinity
	}
	r.mu.Lock()
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
	r.mu.Unlock()
}

// Operations returns a copy of the history so far.
func (r *Recorder) Operations() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]porcupine.Operation(nil), r.ops...)
}

// Stats counts a history's operations.
type Stats struct {
	Ops          int // every operation recorded
	AckedWrites  int // puts and deletes that were acknowledged
	UnknownWrite int // puts and deletes whose outcome is unknown
	Reads        int // gets that were answered
}

// Stats counts the history so far.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s Stats
	for _, op := range r.ops {
		s.Ops++
		switch {
		case op.Input.(Input).Kind == Get:
			s.Reads++
		case op.Output.(Output).Unknown:
			s.UnknownWrite++
		default:
			s.AckedWrites++
		}
	}
	return s
}

func (s Stats) String() string {
	return fmt.Sprintf("%d operations: %d acknowledged writes, %d writes of unknown outcome, %d reads", s.Ops, s.AckedWrites, s.UnknownWrite, s.Reads)
}

// CheckRead is a direct check of one read, independent of porcupine and
// quick enough to run after every restart: a Get of key called at call,
// returning at ret, that observed out must have read what some write left
// (a Put of that value, or a Delete or nothing at all for "not found")
// which began before the read returned and which no acknowledged write
// supersedes, that is, no acknowledged write began after it returned and
// returned itself before the read began. It returns an error naming the
// acknowledged write that was lost when there is none.
func CheckRead(ops []porcupine.Operation, key string, out Output, call, ret int64) error {
	// latest is the acknowledged write, completed before the read began,
	// that began last: every candidate must not have returned before it.
	var latest *porcupine.Operation
	for i := range ops {
		op := &ops[i]
		in := op.Input.(Input)
		if in.Key != key || in.Kind == Get || op.Return == Infinity || op.Return >= call {
			continue
		}
		if latest == nil || op.Call > latest.Call {
			latest = op
		}
	}
	if latest == nil {
		// Nothing acknowledged precedes the read: the initial state, or
		// any write that began before it returned, may be observed.
		if !out.Found {
			return nil
		}
	}
	for i := range ops {
		op := &ops[i]
		in := op.Input.(Input)
		if in.Key != key || in.Kind == Get || op.Call > ret {
			continue
		}
		if out.Found != (in.Kind == Put) || (out.Found && in.Value != out.Value) {
			continue
		}
		if latest == nil || op.Return >= latest.Call {
			return nil
		}
	}
	what := "not found"
	if out.Found {
		what = fmt.Sprintf("%q", out.Value)
	}
	if latest == nil {
		return fmt.Errorf("get(%s) read %s, which no write of the history could have left", key, what)
	}
	return fmt.Errorf("get(%s) read %s, but the acknowledged %s supersedes every write that could have left it: that write was lost",
		key, what, Model.DescribeOperation(latest.Input, latest.Output))
}

// Check runs porcupine over ops and fails t unless the history is
// linearizable; it reports whether it is. On failure it writes porcupine's
// visualization to a file under the temp directory and names it. The check
// has no time limit of its own, so that a loaded machine cannot turn a
// correct history into a failure; the test binary's -timeout bounds it.
func Check(t testing.TB, ops []porcupine.Operation) bool {
	t.Helper()
	res, info := porcupine.CheckOperationsVerbose(Model, ops, 0)
	if res == porcupine.Ok {
		return true
	}
	path := "(not written)"
	if dir, err := os.MkdirTemp("", "kv-linearizability-"); err == nil {
		p := filepath.Join(dir, "history.html")
		if err := porcupine.VisualizePath(Model, info, p); err == nil {
			path = p
		}
	}
	t.Errorf("porcupine: the history of %d operations is not linearizable; visualization: %s", len(ops), path)
	return false
}
