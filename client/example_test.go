package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
)

// Create a namespace, wait until it is ready, then write and read a key.
func ExampleClient_CreateNamespace() {
	ctx := context.Background()
	c := client.New(client.WithBaseURL("http://127.0.0.1:8080"), client.WithAPIKey(os.Getenv("TELNYX_API_KEY")))

	ns, err := c.CreateNamespace(ctx, "my-cache")
	if err != nil {
		log.Fatal(err)
	}
	if ns, err = c.WaitReady(ctx, ns.ID.String()); err != nil {
		log.Fatal(err)
	}
	cache := c.Namespace(ns.ID.String())
	if _, err := cache.Put(ctx, "user/123", []byte(`{"name":"Alice 👋"}`), &client.PutOptions{ContentType: "application/json"}); err != nil {
		log.Fatal(err)
	}
	user, _, err := cache.Get(ctx, "user/123")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(user))
}

// A function reaches the namespace bound as MY_CACHE in func.toml through
// KV_MY_CACHE_ID, TELNYX_API_KEY and TELNYX_BASE_URL.
func ExampleBinding() {
	cache, err := client.Binding("MY_CACHE")
	if err != nil {
		log.Fatal(err)
	}
	value, _, err := cache.Get(context.Background(), "possibly-missing-key")
	if errors.Is(err, kv.ErrNotFound) {
		fmt.Println("not found")
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", value)
}

// Session storage with expiry: a session lives 24 hours after its last
// view.
func ExampleNamespace_GetWithExpiry() {
	const sessionTTL = 24 * time.Hour
	sessions, err := client.Binding("MY_CACHE")
	if err != nil {
		log.Fatal(err)
	}
	handler := func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		key := "session/" + r.Header.Get("X-Session-ID")
		session, ok, err := sessions.GetWithExpiry(ctx, key)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		data := map[string]any{"created": time.Now().UnixMilli(), "views": 0.0}
		if ok {
			if err := json.Unmarshal([]byte(session), &data); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			views, _ := data["views"].(float64)
			data["views"] = views + 1
		}
		updated, _ := json.Marshal(data)
		if err := sessions.PutWithExpiry(ctx, key, string(updated), sessionTTL); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(updated)
	}
	http.HandleFunc("/", handler)
}

// API response caching: answer from the cache for five minutes, then fetch
// from the origin again.
func ExampleNamespace_PutWithExpiry() {
	const cacheTTL = 5 * time.Minute
	cache, err := client.Binding("MY_CACHE")
	if err != nil {
		log.Fatal(err)
	}
	handler := func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		cacheKey := "cache/api" + r.URL.Path
		if cached, ok, err := cache.GetWithExpiry(ctx, cacheKey); err == nil && ok {
			w.Header().Set("X-Cache", "HIT")
			io.WriteString(w, cached)
			return
		}
		resp, err := http.Get("https://api.example.com/data")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if err := cache.PutWithExpiry(ctx, cacheKey, string(data), cacheTTL); err != nil {
			log.Printf("caching %s: %v", cacheKey, err)
		}
		w.Header().Set("X-Cache", "MISS")
		w.Write(data)
	}
	http.HandleFunc("/data", handler)
}

// Feature flags: plain keys, no expiry.
func ExampleNamespace_Get() {
	flags, err := client.Binding("MY_CACHE")
	if err != nil {
		log.Fatal(err)
	}
	handler := func(w http.ResponseWriter, r *http.Request) {
		enabled, _, err := flags.Get(r.Context(), "flag/new-ui")
		if err != nil && !errors.Is(err, kv.ErrNotFound) {
			log.Printf("reading flag/new-ui: %v", err)
		}
		if string(enabled) == "true" {
			io.WriteString(w, "new UI")
			return
		}
		io.WriteString(w, "old UI")
	}
	http.HandleFunc("/ui", handler)
}

// The service's own TTL needs no envelope: the key reads as missing once it
// expires, and it stops counting toward storage.
func ExampleNamespace_Put_ttl() {
	cache, err := client.Binding("MY_CACHE")
	if err != nil {
		log.Fatal(err)
	}
	created, err := cache.Put(context.Background(), "session/abc", []byte(`{"userId":42}`), &client.PutOptions{TTL: time.Hour, ContentType: "application/json"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("created:", created)
}

// Walk every key under a prefix, following cursors.
func ExampleNamespace_Keys() {
	cache, err := client.Binding("MY_CACHE")
	if err != nil {
		log.Fatal(err)
	}
	for info, err := range cache.Keys(context.Background(), "user/") {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(info.Key, info.Size, info.UpdatedAt.Format(time.RFC3339))
	}
}

// Count page views without losing any to concurrent requests: Update reads
// the value with its ETag and writes only if nobody wrote in between,
// retrying otherwise.
func ExampleNamespace_Update() {
	cache, err := client.Binding("MY_CACHE")
	if err != nil {
		log.Fatal(err)
	}
	etag, err := cache.Update(context.Background(), "counter/page", func(old []byte, found bool) ([]byte, error) {
		n := 0
		if found {
			if n, err = strconv.Atoi(string(old)); err != nil {
				return nil, err // returned by Update as is; nothing written
			}
		}
		return []byte(strconv.Itoa(n + 1)), nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("new ETag:", etag)
}

// A write conditional on the ETag that was read: a 412 says another write
// came first, and what the key's ETag is now.
func ExamplePutOptions_ifMatch() {
	cache, err := client.Binding("MY_CACHE")
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	res, err := cache.GetWithOptions(ctx, "config/site", nil)
	if err != nil {
		log.Fatal(err)
	}
	_, err = cache.Put(ctx, "config/site", append(res.Value, '!'), &client.PutOptions{IfMatch: res.ETag, ContentType: res.ContentType})
	var apiErr *client.APIError
	if errors.Is(err, client.ErrPreconditionFailed) && errors.As(err, &apiErr) {
		fmt.Println("changed meanwhile; its ETag is now", apiErr.ETag)
		return
	}
	if err != nil {
		log.Fatal(err)
	}
}

// An atomic batch: the check holds and every write commits, or nothing is
// written.
func ExampleNamespace_Batch() {
	cache, err := client.Binding("MY_CACHE")
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	user, err := cache.GetWithOptions(ctx, "user/1", nil)
	if err != nil {
		log.Fatal(err)
	}
	out, err := cache.Batch().
		Check("user/1", user.ETag).
		Put("user/1", []byte(`{"name":"Alice","plan":"pro"}`), &client.PutOptions{ContentType: "application/json"}).
		Incr("stats/upgrades", 1).
		Run(ctx)
	var opErr *client.OpError
	if errors.As(err, &opErr) && errors.Is(err, client.ErrPreconditionFailed) {
		fmt.Printf("op %d: user/1 changed meanwhile; nothing written\n", opErr.Index)
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("upgrades so far:", out.Results[2].Counter)
}

// Incr is a counter kept by the service: no read, no conflict.
func ExampleNamespace_Incr() {
	cache, err := client.Binding("MY_CACHE")
	if err != nil {
		log.Fatal(err)
	}
	views, err := cache.Incr(context.Background(), "views/home", 1)
	if errors.Is(err, client.ErrMaybeApplied) {
		log.Printf("the increment may or may not have been counted: %v", err)
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(views)
}
