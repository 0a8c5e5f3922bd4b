package api

import (
	"net/url"
	"strconv"
	"strings"

	"github.com/edgekv/kv"
)

// query is a request's query string, parsed strictly: the known
// parameters of its route, each at most once. Unknown parameters are
// ignored, as the hosted service ignores them, but a malformed query
// string is refused whatever it names: nothing is silently dropped.
type query map[string]string

// parseQuery parses raw, keeping the parameters named in known. A
// malformed pair (a bad percent escape, a ';', which is no separator), or
// a known parameter given twice, is an error naming the parameter; one
// about ttl_secs is 422, as any bad ttl_secs is.
func parseQuery(raw string, known ...string) (query, error) {
	q := query{}
	if raw == "" {
		return q, nil
	}
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		rawName, rawValue, _ := strings.Cut(part, "=")
		name, err := url.QueryUnescape(rawName)
		if err != nil {
			return nil, kv.Errorf(kv.EInvalid, "the query string is malformed: %q is not a valid parameter name (a %% must begin an escape such as %%2F)", truncate(rawName, 64))
		}
		if strings.Contains(part, ";") {
			return nil, paramError(name, "the query string is malformed: %q contains ';', which does not separate parameters (escape it as %%3B)", truncate(part, 64))
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return nil, paramError(name, "the query string is malformed: the value of %s, %q, has an invalid escape (a %% must begin an escape such as %%2F)", truncate(name, 64), truncate(rawValue, 64))
		}
		if !isKnown(name, known) {
			continue
		}
		if _, dup := q[name]; dup {
			return nil, paramError(name, "%s is given more than once; give it once", name)
		}
		q[name] = value
	}
	return q, nil
}

func isKnown(name string, known []string) bool {
	for _, k := range known {
		if k == name {
			return true
		}
	}
	return false
}

// paramError is the error for a malformed parameter: 422 for ttl_secs, as
// for any unacceptable ttl_secs, else 400.
func paramError(name, format string, args ...any) *kv.Error {
	code := kv.EInvalid
	if name == "ttl_secs" || name == "ttl" {
		code = kv.EUnprocessable
	}
	e := kv.Errorf(code, format, args...)
	if name != "" && len(name) <= 64 {
		e = e.WithParam(name)
	}
	return e
}

// integer returns parameter name as an int; absent gives def. A value too
// large for an int is clamped to the largest (callers clamp further);
// anything else that is not a decimal integer is an error.
func (q query) integer(name string, def int, what string) (int, error) {
	v, ok := q[name]
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange && v != "" && v[0] != '-' && v[0] != '+' {
			return int(^uint(0) >> 1), nil
		}
		return 0, paramError(name, "%s must be %s; got %q", name, what, truncate(v, 32))
	}
	return n, nil
}
