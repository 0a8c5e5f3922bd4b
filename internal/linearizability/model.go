// Package linearizability records histories of key operations on kvd and
// checks them against a sequential specification: each key is a register
// (a value or nothing) that PUT sets, DELETE clears and GET reads, and a
// PUT reports whether it created the key. A conditional PUT or DELETE
// (If-Match the ETag of a value read, If-None-Match: *) takes effect only
// when the key holds that value (or nothing), and otherwise fails (412)
// with no effect. An atomic batch applies its checks, gets, puts and
// deletes on several keys of one group at one instant, or, when a check
// fails, nothing. The checker is porcupine; histories are partitioned by
// group (a key is its own group unless the operation names one), so a
// batch's keys must share one.
//
// An operation whose outcome is unknown (a PUT or DELETE that failed with a
// connection error, a timeout, or a server error) is recorded with a return
// time of +infinity: it may have taken effect at any moment after its call,
// or never. A GET whose outcome is unknown observed nothing and is dropped.
//
// The package is engine-neutral: the same recorder and model serve the
// embedded engine, PostgreSQL, and several kvd processes on one database.
package linearizability

import (
	"fmt"
	"math"
	"sort"

	"github.com/anishathalye/porcupine"
)

// Kind is the kind of a key operation.
type Kind uint8

// The operations of the register model.
const (
	Get Kind = iota
	Put
	Delete
	Precondition // a batch's check (within Input.Ops only)
	Batch        // an atomic batch of Input.Ops
)

// Cond is the precondition of a Put, a Delete or a Check.
type Cond uint8

const (
	Always   Cond = iota
	IfValue       // the key holds Expect
	IfAbsent      // the key does not exist
)

func (k Kind) String() string {
	switch k {
	case Get:
		return "get"
	case Put:
		return "put"
	case Delete:
		return "delete"
	case Precondition:
		return "check"
	case Batch:
		return "batch"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Input is an operation as called.
type Input struct {
	Kind  Kind
	Key   string
	Value string // Put: the value written
	// Cond and Expect: the precondition of a Put, Delete or Check.
	Cond   Cond
	Expect string
	// ETag: what the client sends for IfValue (the ETag it read with
	// Expect); the model ignores it.
	ETag string
	// Ops: a Batch's operations, on keys of Group.
	Ops   []Input
	Group string
}

// partition is the group an operation belongs to.
func (in Input) partition() string {
	if in.Group != "" {
		return in.Group
	}
	return in.Key
}

// Output is an operation's outcome.
type Output struct {
	// Unknown: a Put or Delete that may or may not have taken effect.
	Unknown bool
	// Found and Value: what a Get read (Found false: 404).
	Found bool
	Value string
	// Created: a Put answered 201 rather than 200.
	Created bool
	// Failed: a precondition did not hold (412); nothing changed.
	Failed bool
	// Results: a committed Batch's outcome of each op (Found and Value of
	// a get, Created of a put).
	Results []Output
}

// Infinity is the return time of an operation whose outcome is unknown.
const Infinity = math.MaxInt64

// state is the registers of one group: the keys that hold a value.
// Steps copy it; it is never changed in place.
type state map[string]string

func (s state) with(key string, value *string) state {
	n := make(state, len(s)+1)
	for k, v := range s {
		n[k] = v
	}
	if value == nil {
		delete(n, key)
	} else {
		n[key] = *value
	}
	return n
}

// holds reports whether key meets in's condition in s.
func holds(s state, in Input) bool {
	v, found := s[in.Key]
	switch in.Cond {
	case IfValue:
		return found && v == in.Expect
	case IfAbsent:
		return !found
	}
	return true
}

// step applies one operation to a group's state and reports whether the
// observed output is allowed.
func step(s state, in Input, out Output) (bool, state) {
	switch in.Kind {
	case Get:
		v, found := s[in.Key]
		return out.Found == found && (!found || out.Value == v), s
	case Put, Delete:
		if !holds(s, in) {
			return out.Unknown || out.Failed, s
		}
		if out.Failed {
			return false, s
		}
		if in.Kind == Delete {
			return true, s.with(in.Key, nil)
		}
		if _, found := s[in.Key]; !out.Unknown && out.Created == found {
			return false, s
		}
		v := in.Value
		return true, s.with(in.Key, &v)
	case Batch:
		next := s
		for i, op := range in.Ops {
			if !holds(next, op) {
				return out.Unknown || out.Failed, s
			}
			var r Output
			if !out.Unknown && !out.Failed {
				if len(out.Results) != len(in.Ops) {
					return false, s
				}
				r = out.Results[i]
			}
			v, found := next[op.Key]
			switch op.Kind {
			case Get:
				if !out.Unknown && !out.Failed && (r.Found != found || found && r.Value != v) {
					return false, s
				}
			case Put:
				if !out.Unknown && !out.Failed && r.Created == found {
					return false, s
				}
				nv := op.Value
				next = next.with(op.Key, &nv)
			case Delete:
				next = next.with(op.Key, nil)
			}
		}
		if out.Failed {
			return false, s // every check held
		}
		return true, next
	}
	return false, s
}

// Model is the per-key register model, partitioned by key.
var Model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(Input).partition()
			byKey[k] = append(byKey[k], op)
		}
		keys := make([]string, 0, len(byKey))
		for k := range byKey {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, byKey[k])
		}
		return parts
	},
	Init: func() any { return state{} },
	Step: func(s, in, out any) (bool, any) {
		return step(s.(state), in.(Input), out.(Output))
	},
	Equal: func(a, b any) bool {
		x, y := a.(state), b.(state)
		if len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if w, ok := y[k]; !ok || w != v {
				return false
			}
		}
		return true
	},
	DescribeOperation: func(in, out any) string {
		i, o := in.(Input), out.(Output)
		cond := ""
		switch i.Cond {
		case IfValue:
			cond = fmt.Sprintf(" if %q", i.Expect)
		case IfAbsent:
			cond = " if absent"
		}
		switch {
		case i.Kind == Batch:
			ops := make([]string, len(i.Ops))
			for n, op := range i.Ops {
				ops[n] = fmt.Sprintf("%s(%s %q)", op.Kind, op.Key, op.Value)
			}
			res := "committed"
			switch {
			case o.Unknown:
				res = "unknown"
			case o.Failed:
				res = "412"
			}
			return fmt.Sprintf("batch%v -> %s %v", ops, res, o.Results)
		case o.Failed:
			return fmt.Sprintf("%s(%s%s) -> 412", i.Kind, i.Key, cond)
		case cond != "":
			return fmt.Sprintf("%s(%s, %q%s) -> %v", i.Kind, i.Key, i.Value, cond, o)
		case i.Kind == Get && o.Found:
			return fmt.Sprintf("get(%s) -> %q", i.Key, o.Value)
		case i.Kind == Get:
			return fmt.Sprintf("get(%s) -> not found", i.Key)
		case o.Unknown:
			if i.Kind == Put {
				return fmt.Sprintf("put(%s, %q) -> unknown", i.Key, i.Value)
			}
			return fmt.Sprintf("delete(%s) -> unknown", i.Key)
		case i.Kind == Put && o.Created:
			return fmt.Sprintf("put(%s, %q) -> 201", i.Key, i.Value)
		case i.Kind == Put:
			return fmt.Sprintf("put(%s, %q) -> 200", i.Key, i.Value)
		}
		return fmt.Sprintf("delete(%s) -> ok", i.Key)
	},
	DescribeState: func(s any) string {
		st := s.(state)
		if len(st) == 0 {
			return "(none)"
		}
		keys := make([]string, 0, len(st))
		for k := range st {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b []byte
		for _, k := range keys {
			b = fmt.Appendf(b, "%s=%q ", k, st[k])
		}
		return string(b)
	},
}
