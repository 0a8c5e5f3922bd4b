package linearizability

import (
	"testing"

	"github.com/anishathalye/porcupine"
)

// op builds an operation on key "k" called at c, returning at r.
func op(in Input, out Output, c, r int64) porcupine.Operation {
	in.Key = "k"
	if out.Unknown {
		r = Infinity
	}
	return porcupine.Operation{Input: in, Output: out, Call: c, Return: r}
}

var (
	put  = func(v string) Input { return Input{Kind: Put, Value: v} }
	del  = Input{Kind: Delete}
	get  = Input{Kind: Get}
	read = func(v string) Output { return Output{Found: true, Value: v} }
	none = Output{}
	c201 = Output{Created: true}
	r200 = Output{}
	lost = Output{Unknown: true}
)

func TestModel(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  []porcupine.Operation
		ok   bool
	}{
		{"sequential", []porcupine.Operation{op(put("a"), c201, 0, 1), op(get, read("a"), 2, 3), op(put("b"), r200, 4, 5), op(del, none, 6, 7), op(get, none, 8, 9)}, true},
		{"stale read", []porcupine.Operation{op(put("a"), c201, 0, 1), op(put("b"), r200, 2, 3), op(get, read("a"), 4, 5)}, false},
		{"concurrent read either way", []porcupine.Operation{op(put("a"), c201, 0, 1), op(put("b"), r200, 2, 6), op(get, read("a"), 3, 4), op(get, read("b"), 5, 7)}, true},
		{"read goes back in time", []porcupine.Operation{op(put("a"), c201, 0, 1), op(put("b"), r200, 2, 9), op(get, read("b"), 3, 4), op(get, read("a"), 5, 6)}, false},
		{"two creations", []porcupine.Operation{op(put("a"), c201, 0, 3), op(put("b"), c201, 1, 4)}, false},
		{"created after delete", []porcupine.Operation{op(put("a"), c201, 0, 1), op(del, none, 2, 3), op(put("b"), c201, 4, 5)}, true},
		{"replaced on an empty key", []porcupine.Operation{op(put("a"), r200, 0, 1)}, false},
		{"unknown write applied later", []porcupine.Operation{op(put("a"), lost, 0, 0), op(get, none, 2, 3), op(get, read("a"), 4, 5)}, true},
		{"unknown write never applied", []porcupine.Operation{op(put("a"), c201, 0, 1), op(put("b"), lost, 2, 0), op(get, read("a"), 4, 5)}, true},
		{"unknown write seen, then lost", []porcupine.Operation{op(put("a"), c201, 0, 1), op(put("b"), lost, 2, 0), op(get, read("b"), 4, 5), op(get, read("a"), 6, 7)}, false},
		{"acknowledged write lost", []porcupine.Operation{op(put("a"), c201, 0, 1), op(put("b"), r200, 2, 3), op(put("c"), lost, 4, 0), op(get, read("a"), 6, 7)}, false},
		{"acknowledged delete lost", []porcupine.Operation{op(put("a"), c201, 0, 1), op(del, none, 2, 3), op(get, read("a"), 6, 7)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := porcupine.CheckOperations(Model, tc.ops); got != tc.ok {
				t.Fatalf("linearizable = %v, want %v", got, tc.ok)
			}
		})
	}
}

func TestModelPartitionsByKey(t *testing.T) {
	// Each key on its own is fine; mixing their states would not be.
	ops := []porcupine.Operation{
		{Input: Input{Kind: Put, Key: "x", Value: "1"}, Output: c201, Call: 0, Return: 1},
		{Input: Input{Kind: Put, Key: "y", Value: "2"}, Output: c201, Call: 2, Return: 3},
		{Input: Input{Kind: Get, Key: "x"}, Output: read("1"), Call: 4, Return: 5},
		{Input: Input{Kind: Get, Key: "z"}, Output: none, Call: 4, Return: 5},
	}
	if !porcupine.CheckOperations(Model, ops) {
		t.Fatal("independent keys judged not linearizable")
	}
	ops = append(ops, porcupine.Operation{Input: Input{Kind: Get, Key: "y"}, Output: read("1"), Call: 6, Return: 7})
	if porcupine.CheckOperations(Model, ops) {
		t.Fatal("a read of another key's value judged linearizable")
	}
}

func TestCheckRead(t *testing.T) {
	history := []porcupine.Operation{
		op(put("a"), c201, 0, 10),
		op(put("b"), r200, 20, 30),
		op(put("c"), lost, 40, 0),
		op(del, none, 50, 60),
		op(put("d"), r200, 70, 80),
		op(put("e"), r200, 75, 90),
	}
	for _, tc := range []struct {
		name      string
		out       Output
		call, ret int64
		ok        bool
	}{
		{"nothing yet", none, -2, -1, true},
		{"a write in flight", read("a"), 5, 6, true},
		{"a value never written", read("zz"), 5, 6, false},
		{"latest acknowledged", read("b"), 31, 32, true},
		{"superseded", read("a"), 31, 32, false},
		{"unknown write applied", read("c"), 45, 46, true},
		{"delete in flight", none, 55, 56, true},
		{"deleted", none, 61, 62, true},
		{"deleted, then old value back", read("b"), 61, 62, false},
		{"unknown write after the delete", read("c"), 61, 62, true},
		{"concurrent writes, either", read("d"), 91, 92, true},
		{"concurrent writes, other", read("e"), 91, 92, true},
		{"delete lost", none, 91, 92, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckRead(history, "k", tc.out, tc.call, tc.ret)
			if (err == nil) != tc.ok {
				t.Fatalf("CheckRead = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

func TestRecorderUnknown(t *testing.T) {
	r := NewRecorder()
	r.Record(0, Input{Kind: Put, Key: "k", Value: "v"}, Output{Unknown: true}, 1, 2)
	r.Record(0, Input{Kind: Get, Key: "k"}, Output{Unknown: true}, 3, 4)
	ops := r.Operations()
	if len(ops) != 1 || ops[0].Return != Infinity {
		t.Fatalf("recorded %+v; want the put alone, returning at infinity", ops)
	}
	if s := r.Stats(); s.UnknownWrite != 1 || s.Ops != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestModelConditionsAndBatches(t *testing.T) {
	g := func(in Input) Input { in.Group = "g"; return in }
	at := func(in Input, out Output, c, r int64) porcupine.Operation {
		if out.Unknown {
			r = Infinity
		}
		return porcupine.Operation{Input: g(in), Output: out, Call: c, Return: r}
	}
	putA := func(v string) Input { return Input{Kind: Put, Key: "a", Value: v} }
	putIf := func(v, expect string) Input {
		return Input{Kind: Put, Key: "a", Value: v, Cond: IfValue, Expect: expect}
	}
	getK := func(k string) Input { return Input{Kind: Get, Key: k} }
	failed := Output{Failed: true}
	both := Input{Kind: Batch, Ops: []Input{{Kind: Put, Key: "a", Value: "2"}, {Kind: Put, Key: "b", Value: "2"}}}
	committed := Output{Results: []Output{{Created: false}, {Created: false}}}
	for _, tc := range []struct {
		name string
		ops  []porcupine.Operation
		ok   bool
	}{
		{"if-match holds", []porcupine.Operation{at(putA("1"), c201, 0, 1), at(putIf("2", "1"), r200, 2, 3), at(getK("a"), read("2"), 4, 5)}, true},
		{"if-match of a stale value succeeded", []porcupine.Operation{at(putA("1"), c201, 0, 1), at(putA("2"), r200, 2, 3), at(putIf("3", "1"), r200, 4, 5)}, false},
		{"412 although it held", []porcupine.Operation{at(putA("1"), c201, 0, 1), at(putIf("2", "1"), failed, 2, 3)}, false},
		{"a 412 changed the key", []porcupine.Operation{at(putA("1"), c201, 0, 1), at(putIf("2", "x"), failed, 2, 3), at(getK("a"), read("2"), 4, 5)}, false},
		{"two if-match winners", []porcupine.Operation{at(putA("1"), c201, 0, 1), at(putIf("2", "1"), r200, 2, 5), at(putIf("3", "1"), r200, 3, 6)}, false},
		{"if-absent twice", []porcupine.Operation{at(Input{Kind: Put, Key: "a", Value: "1", Cond: IfAbsent}, c201, 0, 3), at(Input{Kind: Put, Key: "a", Value: "2", Cond: IfAbsent}, c201, 1, 4)}, false},
		{"batch seen whole", []porcupine.Operation{at(putA("1"), c201, 0, 1), at(Input{Kind: Put, Key: "b", Value: "1"}, c201, 0, 1), at(both, committed, 2, 3), at(getK("a"), read("2"), 4, 5), at(getK("b"), read("2"), 4, 5)}, true},
		{"batch seen in part", []porcupine.Operation{at(putA("1"), c201, 0, 1), at(Input{Kind: Put, Key: "b", Value: "1"}, c201, 0, 1), at(both, committed, 2, 3), at(getK("a"), read("2"), 4, 5), at(getK("b"), read("1"), 4, 5)}, false},
		{"failed batch applied", []porcupine.Operation{at(Input{Kind: Batch, Ops: []Input{{Kind: Put, Key: "a", Value: "9"}, {Kind: Precondition, Key: "b", Cond: IfValue, Expect: "x"}}}, failed, 0, 1), at(getK("a"), read("9"), 2, 3)}, false},
		{"batch get sees its own put", []porcupine.Operation{at(Input{Kind: Batch, Ops: []Input{{Kind: Put, Key: "a", Value: "1"}, {Kind: Get, Key: "a"}}}, Output{Results: []Output{{Created: true}, {Found: true, Value: "1"}}}, 0, 1)}, true},
		{"batch get misses its own put", []porcupine.Operation{at(Input{Kind: Batch, Ops: []Input{{Kind: Put, Key: "a", Value: "1"}, {Kind: Get, Key: "a"}}}, Output{Results: []Output{{Created: true}, {}}}, 0, 1)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := porcupine.CheckOperations(Model, tc.ops); got != tc.ok {
				t.Fatalf("linearizable = %v, want %v", got, tc.ok)
			}
		})
	}
}
