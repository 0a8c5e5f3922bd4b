package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// parseSeeds are bodies every decoder test starts from.
var parseSeeds = []string{
	`{"atomic": true, "ops": [{"op": "check", "key": "a", "etag": "\"0000000000000001\""}, {"op": "check", "key": "b", "absent": true}, {"op": "get", "key": "c"}, {"op": "put", "key": "a", "value": "text", "content_type": "application/json", "ttl_secs": 60}, {"op": "put", "key": "d", "value_base64": "AAE="}, {"op": "delete", "key": "e"}, {"op": "incr", "key": "views/x", "by": 1}]}`,
	`{"atomic": false, "ops": [{"op": "incr", "key": "n", "by": -9223372036854775808}]}`,
	`{"ops": [{"op": "put", "key": "k", "value": "\u00ff", "ttl_secs": 1e3}]}`,
	`{"ops": [7, null, [], {"op": null}, "x", true, {}]}`,
	`{"ops": null}`, `[]`, `{`, ``, `null`, `null x`, `nullx`, ` {"ops":[{"op":"get","key":"k"}]} `, `{"ops":[{"op":"get","key":"k"}]} x`,
	`{"ops":[{"op":"get","key":"k"}]}{}`, `{"atomic": 1} garbage`, `{"atomic": 1, "x": 2}`, `{"x": 2, "atomic": 1}`, `{"atomic": "true"`,
	`{"ops": {}}`, `{"ops": "x"}`, `{"ops": []}`, `{"ops": [{"op":"get","key":"a"}], "ops": null}`, `{"atomic": false, "atomic": null, "ops": [{"op":"get","key":"a"}]}`,
	`{"ops": [{"op": "put", "key": "k", "value": 5, "ttl_secs": "5"}]}`, `{"ops": [{"op": "put", "key": "k", "ttl_secs": "5", "value": 5}]}`,
	`{"ops": [{"op": "put", "key": "k", "x": 1, "value": 5}]}`, `{"ops": [{"op": "put", "key": "k", "value": 5, "x": 1}]}`,
	`{"ops": [{"op": "put", "key": "k", "value": "a", "value": null}]}`, `{"ops": [{"op": "put", "op": null, "key": "k"}]}`,
	`{"ops": [{"op": "incr", "key": "k", "by": 1.5}, {"op": "incr", "key": "k", "by": 99999999999999999999}, {"op": "incr", "key": "k", "by": [1]}, {"op": "incr", "key": "k", "by": {}}, {"op": "incr", "key": "k", "by": true}]}`,
	`{"ops": [{"op": "put", "key": "k", "value": "v", "ttl_secs": 0}, {"op": "put", "key": "k", "value": "v", "ttl_secs": -1}, {"op": "put", "key": "k", "value": "v", "ttl_secs": 1e2}, {"op": "put", "key": "k", "value": "v", "ttl_secs": 31536000000}]}`,
	`{"ops": [{"op": "put", "key": "\ud800", "value": "\udc00\ud83d\ude00\ud83d\u0041\ud83dx"}, {"op": "put", "key": "k\u0000", "value": "\"\\\/\b\f\n\r\t"}]}`,
	"{\"ops\": [{\"op\": \"put\", \"key\": \"\xff\xfe\", \"value\": \"\xed\xa0\x80 \xe2\x82\"}]}",
	"{\"ops\": [{\"op\": \"put\", \"key\": \"k\", \"value\": \"" + strings.Repeat("\xff", 400000) + "\"}]}",
	`{"ops": [{"op": "put", "key": "k", "value": "` + strings.Repeat(`\ud83d\ude00`, 100000) + `"}]}`,
	`{"ops": [{"op": "put", "key": "k", "value_base64": "AA\u003d\u003d"}, {"op": "put", "key": "k", "value_base64": "A A=="}, {"op": "put", "key": "k", "value_base64": "AA==\n"}, {"op": "put", "key": "k", "value_base64": "AA"}]}`,
	`{"ops": [{"op": "put", "key": "k", "value": "v", "value_base64": "AA=="}, {"op": "put", "key": "k"}, {"op": "get", "key": "k", "value": "v"}, {"op": "check", "key": "k"}, {"op": "check", "key": "k", "etag": "*", "absent": false}, {"op": "check", "key": "k", "absent": false}, {"op": "check", "key": "k", "etag": "nope"}, {"op": "check", "key": "k", "etag": "\"1\", \"2\""}]}`,
	`{"ops": [{"op": "frob", "key": "k"}, {"op": "get"}, {"key": "k"}, {"op": "getgetgetgetgetgetgetgetgetgetgetgetgetgetgetget", "key": "k"}, {"op": "g\u0065t", "k\u0065y": "k"}]}`,
	`{"ops": [{"op": "get", "key": "k", "` + strings.Repeat("x", 120) + `": 1}]}`,
	`{"ops": [{"op": "get", "key": "k",}]}`, `{"ops": [{"op": "get", "key": "k"},]}`, `{"ops": [,{"op": "get", "key": "k"}]}`, `{"ops": [{"op": "get" "key": "k"}]}`,
	`{"ops": [{"op": "get", "key": "k"}], "x": [1, {"a": [true, false, null, -0.5e+3, "s"]}, {}, []]}`, `{"ops": [{"op": "get", "key": "k", "value": 01}]}`,
	`{"ops": [{"op": "get", "key": "k", "value": -}]}`, `{"ops": [{"op": "get", "key": "k", "value": 1.}]}`, `{"ops": [{"op": "get", "key": "k", "value": tru}]}`,
	"{\"ops\": [{\"op\": \"get\", \"key\": \"a\tb\"}]}", `{"ops": [{"op": "get", "key": "\x"}]}`, `{"ops": [{"op": "get", "key": "\u12"}]}`,
	`{"OPS": [{"op": "get", "key": "k"}]}`, `{"ops": [{"Op": "get", "key": "k"}]}`,
}

// comparable reports whether the two decoders must agree on body: they
// differ, on purpose, only where a field name matches one of the batch's
// in another case.
func comparable(body []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	for {
		t, err := dec.Token()
		if err != nil {
			return true
		}
		s, ok := t.(string)
		if !ok {
			continue
		}
		for _, n := range fieldNames {
			if s != n && strings.EqualFold(s, n) {
				return false
			}
		}
	}
}

// short is body as a failure shows it.
func short(body []byte) string {
	if len(body) > 300 {
		return fmt.Sprintf("%q... (%d bytes)", body[:300], len(body))
	}
	return fmt.Sprintf("%q", body)
}

func checkSameParse(t *testing.T, body []byte) {
	t.Helper()
	if !comparable(body) {
		return
	}
	checkUnquotedLen(t, body)
	ops, atomic, err := parseBatch(body)
	wantOps, wantAtomic, wantErr := referenceParseBatch(body)
	if !reflect.DeepEqual(err, wantErr) {
		t.Fatalf("body %s:\nerror  %#v\nwanted %#v", short(body), err, wantErr)
	}
	if atomic != wantAtomic || len(ops) != len(wantOps) {
		t.Fatalf("body %s: atomic %v, %d ops; wanted %v, %d", short(body), atomic, len(ops), wantAtomic, len(wantOps))
	}
	for i := range ops {
		if !reflect.DeepEqual(ops[i], wantOps[i]) {
			t.Fatalf("body %s: op %d\nis     %#v\nwanted %#v", short(body), i, ops[i], wantOps[i])
		}
	}
}

// checkUnquotedLen: every string of body counts as long as it decodes.
func checkUnquotedLen(t *testing.T, body []byte) {
	t.Helper()
	p := batchParser{b: body}
	for i := range body {
		if body[i] != '"' {
			continue
		}
		p.pos, p.bad = i, false
		s := p.str()
		if p.bad {
			continue
		}
		if n, m := p.unquotedLen(s), len(p.unquote(nil, s)); n != m {
			t.Fatalf("string %q of body %s: counted %d bytes, decodes to %d", body[s.start:s.end], short(body), n, m)
		}
	}
}

func FuzzParseBatchDifferential(f *testing.F) {
	for _, s := range parseSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(checkSameParse)
}

func TestParseBatchMatchesReference(t *testing.T) {
	for _, s := range parseSeeds {
		checkSameParse(t, []byte(s))
	}
}

// TestParseBatchMatchesReferenceOnRandomBatches: batches built at random
// from the fields an op may have, of every type, given twice, null, with
// escapes, odd numbers and invalid UTF-8, decode alike; so do their
// truncations and each with one byte changed.
func TestParseBatchMatchesReferenceOnRandomBatches(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := 3000
	if testing.Short() {
		n = 300
	}
	for range n {
		body := randomBatch(rng)
		checkSameParse(t, body)
		checkSameParse(t, body[:rng.IntN(len(body)+1)])
		m := bytes.Clone(body)
		const poke = "{}[],:\"\\ 0-.eEtfnu\x00\xff"
		m[rng.IntN(len(m))] = poke[rng.IntN(len(poke))]
		checkSameParse(t, m)
	}
}

func randomBatch(rng *rand.Rand) []byte {
	pick := func(s ...string) string { return s[rng.IntN(len(s))] }
	str := func() string {
		return pick(`"get"`, `"put"`, `"check"`, `"delete"`, `"incr"`, `"frob"`, `""`, `"k"`, `"*"`, `"\"0000000000000001\""`, `"\"1\", \"2\""`,
			`"AAE="`, `"AA=="`, `"A\u0041=="`, `"\ud800"`, `"\ud83d\ude00"`, `"g\u0065t"`, "\"\xff\"", `"text/plain"`, `"a\nb"`)
	}
	value := func() string {
		switch rng.IntN(8) {
		case 0:
			return pick(`1`, `0`, `-1`, `60`, `1.5`, `1e3`, `-0`, `9223372036854775807`, `-9223372036854775809`, `31536001`)
		case 1:
			return pick(`true`, `false`)
		case 2:
			return `null`
		case 3:
			return pick(`{}`, `[]`, `[1, "x", {"a": null}]`, `{"op": "get"}`)
		default:
			return str()
		}
	}
	fields := []string{"op", "key", "etag", "absent", "value", "value_base64", "content_type", "ttl_secs", "by", "x"}
	var b strings.Builder
	b.WriteString("{")
	top := 0
	if rng.IntN(8) == 0 {
		fmt.Fprintf(&b, `"atomic": %s`, value())
		top++
	}
	if top > 0 {
		b.WriteString(", ")
	}
	b.WriteString(`"ops": [`)
	for i := range 1 + rng.IntN(6) {
		if i > 0 {
			b.WriteString(", ")
		}
		if rng.IntN(12) == 0 {
			b.WriteString(value())
			continue
		}
		b.WriteString("{")
		kind := pick("get", "put", "check", "delete", "incr")
		fmt.Fprintf(&b, `"op": %q, "key": "k%d"`, kind, i)
		for range rng.IntN(4) {
			fmt.Fprintf(&b, `, "%s": %s`, fields[rng.IntN(len(fields))], value())
		}
		b.WriteString("}")
	}
	b.WriteString("]")
	if rng.IntN(8) == 0 {
		fmt.Fprintf(&b, `, "%s": %s`, pick("atomic", "ops", "x"), value())
	}
	b.WriteString("}")
	return []byte(b.String())
}

// TestParseBatchNestingLimit: a value nested as deeply as encoding/json
// allows is a value of the wrong type; one level more is no JSON.
func TestParseBatchNestingLimit(t *testing.T) {
	for _, n := range []int{maxDepth - 3, maxDepth - 2} {
		body := []byte(`{"ops": [{"op": "put", "key": "k", "value": ` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}]}`)
		checkSameParse(t, body)
		ops, _, err := parseBatch(body)
		if n == maxDepth-3 && (err != nil || ops[0].Err == nil || !strings.Contains(ops[0].Err.Error(), "value must be a string")) {
			t.Fatalf("depth %d: %v, %+v", n+3, err, ops)
		}
		if n == maxDepth-2 && err != errBatchShape {
			t.Fatalf("depth %d: %v", n+3, err)
		}
	}
}

// TestParseBatchCountsOpsPastTheLimit: a batch of 1,000 ops decodes
// whole; ops past the thousandth are counted, not decoded, and the batch
// is refused with their number.
func TestParseBatchCountsOpsPastTheLimit(t *testing.T) {
	for _, n := range []int{1000, 1001, 1501} {
		body := []byte(`{"ops": [` + strings.Repeat(`{"op": "get", "key": "k"}, `, n-1) + `{"op": "get", "key": "k"}]}`)
		checkSameParse(t, body)
		ops, _, err := parseBatch(body)
		switch {
		case n == 1000 && (err != nil || len(ops) != 1000):
			t.Fatalf("%d ops: %d decoded, %v", n, len(ops), err)
		case n > 1000 && (err == nil || !strings.Contains(err.Error(), fmt.Sprintf("this one has %d", n))):
			t.Fatalf("%d ops: error %v", n, err)
		}
	}
}

// batchOf100 is a batch of 100 puts of 1 KiB values, as kvbench sends.
func batchOf100() []byte {
	var b bytes.Buffer
	b.WriteString(`{"ops":[`)
	v := bytes.Repeat([]byte{0xa5, 0x5a, 0x00, 0xff}, 256)
	for j := range 100 {
		if j > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"op":"put","key":"bp/1/%02d","value_base64":"%s"}`, j, base64.StdEncoding.EncodeToString(v))
	}
	b.WriteString("]}")
	return b.Bytes()
}

func BenchmarkParseBatch(b *testing.B) {
	body := batchOf100()
	for _, c := range []struct {
		name  string
		parse func([]byte) (any, error)
	}{
		{"single-pass", func(b []byte) (any, error) { ops, _, err := parseBatch(b); return ops, err }},
		{"encoding-json", func(b []byte) (any, error) { ops, _, err := referenceParseBatch(b); return ops, err }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.parse(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestParseBatchFieldNamesMatchExactly: a field name in another case is
// an unknown field, not the field.
func TestParseBatchFieldNamesMatchExactly(t *testing.T) {
	if _, _, err := parseBatch([]byte(`{"OPS": [{"op": "get", "key": "k"}]}`)); err != errBatchShape {
		t.Fatalf("OPS: %v", err)
	}
	ops, _, err := parseBatch([]byte(`{"ops": [{"Op": "get", "key": "k"}]}`))
	if err != nil || ops[0].Err == nil || !strings.Contains(ops[0].Err.Error(), `unknown field "Op"`) {
		t.Fatalf("Op: %v, %+v", err, ops)
	}
}

// TestPlainWord: eight bytes are plain only when each of them is.
func TestPlainWord(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200000 {
		var w [8]byte
		plain := true
		for j := range w {
			w[j] = byte(rng.IntN(256))
			if rng.IntN(2) == 0 {
				w[j] = byte(0x20 + rng.IntN(0x60))
			}
			plain = plain && plainByte[w[j]]
		}
		got := plainWord(uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 | uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56)
		if got && !plain {
			t.Fatalf("%q: plain", w)
		}
		if plain && !got {
			t.Fatalf("%q: not plain", w)
		}
	}
}
