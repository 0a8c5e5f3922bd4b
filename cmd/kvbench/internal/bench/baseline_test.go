package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
)

func TestBaseline(t *testing.T) {
	srv := httptest.NewServer(NewBaseline())
	defer srv.Close()
	c := srv.Client()
	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	code, body := do("POST", "/v2/storage/kvs", `{"name":"x"}`)
	var ns struct {
		Data struct{ ID, Status string } `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &ns); code != 201 || err != nil || ns.Data.Status != "provision_ok" {
		t.Fatalf("create namespace: %d %s", code, body)
	}
	keys := "/v2/storage/kvs/" + ns.Data.ID + "/keys"

	if code, _ := do("PUT", keys+"/a/b", "v1"); code != 201 {
		t.Fatalf("first PUT: %d, want 201", code)
	}
	if code, _ := do("PUT", keys+"/a/b", "v2"); code != 200 {
		t.Fatalf("second PUT: %d, want 200", code)
	}
	if code, body := do("GET", keys+"/a/b", ""); code != 200 || body != "v2" {
		t.Fatalf("GET: %d %q", code, body)
	}
	if code, _ := do("GET", keys+"/nope", ""); code != 404 {
		t.Fatalf("GET of a missing key: %d", code)
	}
	if code, _ := do("DELETE", keys+"/a/b", ""); code != 200 {
		t.Fatalf("DELETE: %d", code)
	}
	if code, _ := do("GET", keys+"/a/b", ""); code != 404 {
		t.Fatalf("GET after DELETE: %d", code)
	}
	if code, _ := do("PUT", keys+"/a/b", "v3"); code != 201 {
		t.Fatalf("PUT after DELETE: %d, want 201", code)
	}

	// 2,500 keys under p/, some written after a first listing, one deleted.
	var want []string
	for i := range 2500 {
		k := fmt.Sprintf("p/%05d", (i*7919)%2500)
		want = append(want, k)
		do("PUT", keys+"/"+k, "v")
		if i == 100 {
			do("GET", keys+"?prefix=p/", "")
		}
	}
	do("DELETE", keys+"/p/00007", "")
	want = slices.DeleteFunc(want, func(k string) bool { return k == "p/00007" })
	slices.Sort(want)

	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("listing does not end")
		}
		q := url.Values{"prefix": {"p/"}, "limit": {"1000"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		code, body := do("GET", keys+"?"+q.Encode(), "")
		var page struct {
			RecordType string `json:"record_type"`
			Data       []struct {
				Key       string `json:"key"`
				SizeBytes int    `json:"size_bytes"`
				UpdatedAt string `json:"updated_at"`
			} `json:"data"`
			Meta struct {
				HasMore bool   `json:"has_more"`
				Cursor  string `json:"cursor"`
			} `json:"meta"`
		}
		if err := json.Unmarshal([]byte(body), &page); code != 200 || err != nil || page.RecordType != "storage_kv_key" {
			t.Fatalf("list: %d %v %.200s", code, err, body)
		}
		for _, d := range page.Data {
			if d.SizeBytes != len(d.Key)+1 || d.UpdatedAt == "" {
				t.Fatalf("entry %+v: want size %d and a time", d, len(d.Key)+1)
			}
			got = append(got, d.Key)
		}
		if !page.Meta.HasMore {
			if page.Meta.Cursor != "" {
				t.Fatal("cursor without has_more")
			}
			break
		}
		cursor = page.Meta.Cursor
	}
	if !slices.Equal(got, want) {
		t.Fatalf("listing walked %d keys, want %d in byte order, each once", len(got), len(want))
	}
}
