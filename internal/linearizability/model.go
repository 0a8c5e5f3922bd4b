// Package linearizability records histories of single-key operations on kvd
// and checks them against a sequential specification: each key is an
// independent register (a value or nothing) that PUT sets, DELETE clears and
// GET reads, and a PUT reports whether it created the key. The checker is
// porcupine; histories are partitioned by key.
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
)

func (k Kind) String() string {
	switch k {
	case Get:
		return "get"
	case Put:
		return "put"
	case Delete:
		return "delete"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Input is an operation as called.
type Input struct {
	Kind  Kind
	Key   string
	Value string // Put: the value written
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
}

// Infinity is the return time of an operation whose outcome is unknown.
const Infinity = math.MaxInt64

// state is one key's register.
type state struct {
	found bool
	value string
}

// Step applies one operation to a key's register state and reports whether
// the observed output is allowed.
func step(s state, in Input, out Output) (bool, state) {
	switch in.Kind {
	case Get:
		return out.Found == s.found && (!s.found || out.Value == s.value), s
	case Put:
		if !out.Unknown && out.Created == s.found {
			return false, s
		}
		return true, state{found: true, value: in.Value}
	case Delete:
		return true, state{}
	}
	return false, s
}

// Model is the per-key register model, partitioned by key.
var Model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(Input).Key
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
	Equal: func(a, b any) bool { return a.(state) == b.(state) },
	DescribeOperation: func(in, out any) string {
		i, o := in.(Input), out.(Output)
		switch {
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
		if !st.found {
			return "(none)"
		}
		return fmt.Sprintf("%q", st.value)
	},
}
