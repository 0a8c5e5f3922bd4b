package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/edgekv/kv"
)

// ErrHistoryGone is matched by the 410 answer of a watch that resumes
// from a revision older than the history the service keeps: the watcher
// must start again, with WatchOptions.Snapshot. The *APIError's
// OldestRevision is the lowest revision it may resume from.
var ErrHistoryGone = kv.ErrHistoryGone

// WatchOptions are the parameters of Namespace.Watch.
type WatchOptions struct {
	// Prefix limits the watch to keys that start with it.
	Prefix string
	// Since, when not 0, resumes after that revision: every change after
	// it, then live changes. A revision no longer kept is ErrHistoryGone.
	Since uint64
	// Snapshot (without Since) first yields a put for every live key as
	// of a revision, then an EventReady with that revision, then the
	// changes after it: a complete copy with no gap.
	Snapshot bool
	// Values adds each put's value (up to 64 KiB; larger ones have
	// HasValue false: read them with Get).
	Values bool
}

// EventKind is what a watch event says.
type EventKind string

const (
	EventPut    EventKind = "put"    // the key was written
	EventDelete EventKind = "delete" // the key was deleted
	EventExpire EventKind = "expire" // the key's expiry passed
	// EventReady: everything up to Revision was delivered (after a
	// snapshot, the copy is complete).
	EventReady EventKind = "ready"
	// EventReset: a snapshot was cut off before its EventReady; the
	// watch starts it again, so drop what the cut-off one delivered.
	EventReset EventKind = "reset"
)

// Event is one event of a watch.
type Event struct {
	Kind     EventKind
	Key      string
	Revision uint64
	// Of a put:
	ETag        string
	Size        int64
	ContentType string
	UpdatedAt   time.Time
	ExpiresAt   time.Time // zero: never
	HasValue    bool      // Value is the value written (WatchOptions.Values)
	Value       []byte
}

// The watch's bounds and pace.
const (
	// maxEventSize bounds one event of the stream: a 64 KiB value in
	// base64 with its metadata fits many times over.
	maxEventSize = 1 << 20
	// watchSilence is how long a stream may send nothing (the service
	// pings every 15 s) before the watch takes it for dead and
	// reconnects.
	watchSilence = 45 * time.Second
)

// Watch follows the namespace's changes (see WatchOptions) until ctx ends
// or the loop stops. After a dropped connection, a 5xx or a 429 answer,
// or an overflow (the watcher fell behind), it reconnects by itself, with
// backoff, from the last revision it delivered, so that no change is
// missed or repeated; a snapshot cut off before its EventReady starts
// again after an EventReset. Any other error answer (a 410 matching
// ErrHistoryGone, a 404, a 403) is yielded as the last element.
//
//	for ev, err := range ns.Watch(ctx, client.WatchOptions{Prefix: "flags/", Snapshot: true, Values: true}) {
//		if err != nil {
//			return err
//		}
//		switch ev.Kind { ... }
//	}
func (ns *Namespace) Watch(ctx context.Context, opts WatchOptions) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		w := &watchLoop{ns: ns, opts: opts, since: opts.Since, resumed: opts.Since != 0}
		w.run(ctx, yield)
	}
}

type watchLoop struct {
	ns      *Namespace
	opts    WatchOptions
	since   uint64 // the last revision delivered (or a ready's)
	resumed bool   // since is set: reconnect with it
}

func (w *watchLoop) run(ctx context.Context, yield func(Event, error) bool) {
	failures := 0
	for ctx.Err() == nil {
		delivered, stop, err := w.stream(ctx, yield)
		if stop {
			return
		}
		if err != nil {
			var api *APIError
			if errors.As(err, &api) && !retryableStatus(api.StatusCode) {
				yield(Event{}, err)
				return
			}
		}
		if delivered {
			failures = 0
		}
		failures++
		if sleepCtx(ctx, w.ns.c.backoff(failures)) != nil {
			break
		}
	}
	if err := ctx.Err(); err != nil {
		yield(Event{}, err)
	}
}

// stream runs one connection. It reports whether it delivered anything,
// and stop when the caller's loop stopped.
func (w *watchLoop) stream(ctx context.Context, yield func(Event, error) bool) (delivered, stop bool, err error) {
	q := url.Values{}
	if w.opts.Prefix != "" {
		q.Set("prefix", w.opts.Prefix)
	}
	if w.opts.Values {
		q.Set("values", "true")
	}
	snapshot := false
	if w.resumed {
		q.Set("since", strconv.FormatUint(w.since, 10))
	} else if w.opts.Snapshot {
		q.Set("snapshot", "true")
		snapshot = true
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A stream that stays silent past the service's pings is dead.
	silence := time.AfterFunc(watchSilence, cancel)
	defer silence.Stop()
	resp, err := w.ns.c.do(cctx, request{method: http.MethodGet, path: namespacePath(w.ns.id) + "/watch", query: q.Encode(),
		header: http.Header{"Accept": {"text/event-stream"}}})
	if err != nil {
		return false, false, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return false, false, fmt.Errorf("client: a watch answered %q, not text/event-stream", ct)
	}
	r := &sseReader{r: bufio.NewReaderSize(resp.Body, 64<<10)}
	for {
		ev, err := r.next()
		silence.Reset(watchSilence)
		if err != nil {
			if snapshot && delivered {
				// Cut off within the snapshot: the next connection
				// starts it again.
				if !yield(Event{Kind: EventReset}, nil) {
					return delivered, true, nil
				}
			}
			return delivered, false, err
		}
		if ev.name == "" && ev.data == nil {
			continue // a comment (ping)
		}
		out, err := decodeEvent(ev)
		if err != nil {
			return delivered, false, err
		}
		switch out.Kind {
		case "overflow":
			// Fell behind: resume from what was delivered.
			if snapshot {
				if !yield(Event{Kind: EventReset}, nil) {
					return delivered, true, nil
				}
			}
			return delivered, false, nil
		case EventReady:
			snapshot = false
			w.since, w.resumed = out.Revision, true
		case EventPut, EventDelete, EventExpire:
			if !snapshot {
				w.since, w.resumed = out.Revision, true
			}
		default:
			continue // an event kind this client does not know
		}
		delivered = true
		if !yield(out, nil) {
			return delivered, true, nil
		}
	}
}

// sseEvent is one event of a text/event-stream.
type sseEvent struct {
	id, name string
	data     []byte
}

// sseReader reads a text/event-stream, an event at a time, refusing an
// event over maxEventSize.
type sseReader struct {
	r *bufio.Reader
}

func (s *sseReader) next() (sseEvent, error) {
	var ev sseEvent
	size := 0
	for {
		var line, long []byte
		for {
			chunk, err := s.r.ReadSlice('\n')
			if size += len(chunk); size > maxEventSize {
				return ev, fmt.Errorf("client: a watch event is over %d bytes", maxEventSize)
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				long = append(long, chunk...) // the buffer is reused by the next read
				continue
			}
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return ev, err
			}
			line = chunk
			if long != nil {
				line = append(long, chunk...)
			}
			break
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			if ev.name != "" || ev.data != nil {
				return ev, nil
			}
			return sseEvent{}, nil // a comment's end
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "id":
			ev.id = string(value)
		case "event":
			ev.name = string(value)
		case "data":
			if ev.data != nil {
				ev.data = append(ev.data, '\n')
			}
			ev.data = append(ev.data, value...)
		}
	}
}

// wireEvent is the data of a watch event.
type wireEvent struct {
	Key         string  `json:"key"`
	Revision    uint64  `json:"revision"`
	ETag        string  `json:"etag"`
	SizeBytes   int64   `json:"size_bytes"`
	ContentType string  `json:"content_type"`
	UpdatedAt   string  `json:"updated_at"`
	ExpiresAt   *string `json:"expires_at"`
	Value       *string `json:"value"`
	ValueBase64 *string `json:"value_base64"`
}

func decodeEvent(ev sseEvent) (Event, error) {
	var d wireEvent
	if err := json.Unmarshal(ev.data, &d); err != nil {
		return Event{}, fmt.Errorf("client: a watch event %q has data that is not JSON: %w", ev.name, err)
	}
	out := Event{Kind: EventKind(ev.name), Key: d.Key, Revision: d.Revision, ETag: d.ETag, Size: d.SizeBytes, ContentType: d.ContentType}
	if d.UpdatedAt != "" {
		t, err := time.Parse(time.RFC3339Nano, d.UpdatedAt)
		if err != nil {
			return Event{}, fmt.Errorf("client: a watch event's updated_at %q: %w", d.UpdatedAt, err)
		}
		out.UpdatedAt = t
	}
	if d.ExpiresAt != nil {
		t, err := time.Parse(time.RFC3339Nano, *d.ExpiresAt)
		if err != nil {
			return Event{}, fmt.Errorf("client: a watch event's expires_at %q: %w", *d.ExpiresAt, err)
		}
		out.ExpiresAt = t
	}
	switch {
	case d.Value != nil:
		out.Value, out.HasValue = []byte(*d.Value), true
	case d.ValueBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*d.ValueBase64)
		if err != nil {
			return Event{}, fmt.Errorf("client: a watch event's value_base64: %w", err)
		}
		out.Value, out.HasValue = b, true
	}
	return out, nil
}
