package api

import (
	"strconv"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/service"
)

// The JSON shapes of the wire contract.

type namespaceEnvelope struct {
	Data kv.NamespaceRecord `json:"data"`
}

type namespaceListJSON struct {
	Data []kv.NamespaceRecord `json:"data"`
	Meta pageMetaJSON         `json:"meta"`
}

type pageMetaJSON struct {
	PageNumber   int `json:"page_number"`
	PageSize     int `json:"page_size"`
	TotalPages   int `json:"total_pages"`
	TotalResults int `json:"total_results"`
}

func toNamespaceList(p service.NamespacePage) namespaceListJSON {
	out := namespaceListJSON{
		Data: make([]kv.NamespaceRecord, len(p.Namespaces)),
		Meta: pageMetaJSON{PageNumber: p.PageNumber, PageSize: p.PageSize, TotalPages: p.TotalPages, TotalResults: p.TotalResults},
	}
	for i, ns := range p.Namespaces {
		out.Data[i] = ns.Record()
	}
	return out
}

// appendKeyList appends a key listing in the wire's JSON:
//
//	{"record_type":"storage_kv_key","data":[{"key":…,"size_bytes":…,"updated_at":…}],"meta":{"has_more":…,"cursor":…}}
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
		b = k.UpdatedAt.UTC().AppendFormat(b, kv.KeyTimeFormat)
		b = append(b, `"}`...)
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
