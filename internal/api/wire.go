package api

import (
	"strconv"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/service"
)

// The JSON shapes of the wire contract.

func toNamespaceList(p service.NamespacePage) kv.NamespaceListRecord {
	out := kv.NamespaceListRecord{
		Data: make([]kv.NamespaceRecord, len(p.Namespaces)),
		Meta: kv.PageMeta{PageNumber: p.PageNumber, PageSize: p.PageSize, TotalPages: p.TotalPages, TotalResults: p.TotalResults},
	}
	for i, ns := range p.Namespaces {
		out.Data[i] = ns.Record()
	}
	return out
}

// appendKeyList appends a key listing in the wire's JSON:
//
//	{"record_type":"storage_kv_key","data":[{"key":…,"size_bytes":…,"updated_at":…,"etag":…}],"meta":{"has_more":…,"cursor":…}}
//
// It is written by hand because a page holds up to 1,000 entries and
// reflection would dominate its cost. Keys and cursors need no escaping:
// keys are validated to a-z A-Z 0-9 - _ / = . and cursors are base64url.
func appendKeyList(b []byte, p service.KeyPage) []byte {
	b = append(b, `{"record_type":"storage_kv_key","data":[`...)
	for i, k := range p.Keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"key":"`...)
		b = append(b, k.Key...)
		b = append(b, `","size_bytes":`...)
		b = strconv.AppendInt(b, k.Size, 10)
		b = append(b, `,"updated_at":"`...)
		b = appendKeyTime(b, k.UpdatedAt)
		b = append(b, `","etag":"\"`...)
		e := kv.FormatETag(k.Revision) // 16 hex digits between quotes
		b = append(b, e[1:len(e)-1]...)
		b = append(b, `\""}`...)
	}
	b = append(b, `],"meta":{"has_more":`...)
	b = strconv.AppendBool(b, p.More)
	if p.Cursor != "" {
		b = append(b, `,"cursor":"`...)
		b = append(b, p.Cursor...)
		b = append(b, '"')
	}
	return append(b, "}}"...)
}

// appendKeyTime appends t in kv.KeyTimeFormat (UTC, nine fractional
// digits), as t.UTC().AppendFormat would, at a fraction of its cost: a
// page formats up to 1,000 of these. Years outside 0001-9999 take the
// general path.
func appendKeyTime(b []byte, t time.Time) []byte {
	const (
		unixToCivil = 719468 // days from 0000-03-01 to 1970-01-01
		minSec      = -62135596800
		maxSec      = 253402300799 // 9999-12-31T23:59:59Z
	)
	sec := t.Unix()
	if sec < minSec || sec > maxSec {
		return t.UTC().AppendFormat(b, kv.KeyTimeFormat)
	}
	days := sec / 86400
	rem := sec - days*86400
	if rem < 0 {
		days--
		rem += 86400
	}
	// Civil date from a day count (proleptic Gregorian), after Howard
	// Hinnant's days_from_civil inverse.
	z := days + unixToCivil
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y := yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d := doy - (153*mp+2)/5 + 1
	m := mp + 3
	if m > 12 {
		m -= 12
	}
	if m <= 2 {
		y++
	}
	b = appendDigits(b, y, 4)
	b = append(b, '-')
	b = appendDigits(b, m, 2)
	b = append(b, '-')
	b = appendDigits(b, d, 2)
	b = append(b, 'T')
	b = appendDigits(b, rem/3600, 2)
	b = append(b, ':')
	b = appendDigits(b, rem/60%60, 2)
	b = append(b, ':')
	b = appendDigits(b, rem%60, 2)
	b = append(b, '.')
	b = appendDigits(b, int64(t.Nanosecond()), 9)
	return append(b, 'Z')
}

// appendDigits appends v (>= 0) in exactly n decimal digits.
func appendDigits(b []byte, v int64, n int) []byte {
	b = append(b, "000000000"[:n]...)
	for i := len(b) - 1; i >= len(b)-n; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return b
}
