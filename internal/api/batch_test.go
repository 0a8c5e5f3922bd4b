package api

import (
	"errors"
	"testing"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// FuzzParseBatch: any body either is refused with a clear error of the
// envelope's vocabulary or decodes to 1 to 1000 ops, each a known kind
// with its key, or carrying its own error with a pointer to it; never a
// panic.
func FuzzParseBatch(f *testing.F) {
	for _, s := range []string{
		`{"atomic": true, "ops": [{"op": "check", "key": "a", "etag": "\"0000000000000001\""}, {"op": "check", "key": "b", "absent": true}, {"op": "get", "key": "c"}, {"op": "put", "key": "a", "value": "text", "content_type": "application/json", "ttl_secs": 60}, {"op": "put", "key": "d", "value_base64": "AAE="}, {"op": "delete", "key": "e"}, {"op": "incr", "key": "views/x", "by": 1}]}`,
		`{"atomic": false, "ops": [{"op": "incr", "key": "n", "by": -9223372036854775808}]}`,
		`{"ops": [{"op": "put", "key": "k", "value": "\u00ff", "ttl_secs": 1e3}]}`,
		`{"ops": [7, null, [], {"op": null}]}`,
		`{"ops": null}`, `[]`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ops, _, err := parseBatch(body)
		if err != nil {
			var e *kv.Error
			if !errors.As(err, &e) || e.Detail == "" || e.Code.HTTPStatus() >= 500 {
				t.Fatalf("refused with %v", err)
			}
			return
		}
		if len(ops) < 1 || len(ops) > store.MaxBatchOps {
			t.Fatalf("%d ops accepted", len(ops))
		}
		for i, op := range ops {
			if op.Err != nil {
				var e *kv.Error
				if !errors.As(op.Err, &e) || e.Pointer == "" || e.Code.HTTPStatus() >= 500 {
					t.Fatalf("op %d: error %v without a pointer", i, op.Err)
				}
				continue
			}
			if opNames[op.Kind] == "" {
				t.Fatalf("op %d decoded to kind %d", i, op.Kind)
			}
			if op.Kind == store.OpCheck && op.If.IsZero() {
				t.Fatalf("op %d: a check with no condition", i)
			}
			if len(op.Put.Data) > kv.MaxValueSize {
				t.Fatalf("op %d: a value of %d bytes accepted", i, len(op.Put.Data))
			}
		}
	})
}

func TestEncodeBatchNamesInvalidOps(t *testing.T) {
	ops, _, err := parseBatch([]byte(`{"atomic":false,"ops":[{"op":"frob","key":"k"},{"op":"get","key":"k"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if ops[0].Err == nil || ops[1].Err != nil {
		t.Fatalf("ops: %+v", ops)
	}
}
