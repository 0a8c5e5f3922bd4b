package api

import (
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

type keyJSON struct {
	Key       string `json:"key"`
	SizeBytes int64  `json:"size_bytes"`
	UpdatedAt string `json:"updated_at"`
}

type keyListJSON struct {
	RecordType string        `json:"record_type"`
	Data       []keyJSON     `json:"data"`
	Meta       keyListMetaJS `json:"meta"`
}

type keyListMetaJS struct {
	HasMore bool   `json:"has_more"`
	Cursor  string `json:"cursor,omitempty"`
}

func toKeyList(p service.KeyPage) keyListJSON {
	out := keyListJSON{RecordType: "storage_kv_key", Data: make([]keyJSON, len(p.Keys)), Meta: keyListMetaJS{HasMore: p.More, Cursor: p.Cursor}}
	for i, k := range p.Keys {
		out.Data[i] = keyJSON{Key: k.Key, SizeBytes: k.Size, UpdatedAt: k.UpdatedAt.UTC().Format(kv.KeyTimeFormat)}
	}
	return out
}
