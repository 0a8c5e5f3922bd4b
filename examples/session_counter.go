package examples

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/edgekv/kv/client"
)

// The documentation's session counter ("Session Storage with Expiry") in
// Go, with Namespace.Update: the read, the increment and a write that
// happens only if the session was not written in between, retried until it
// goes through. Concurrent views of one session are never lost; the
// documented read-then-PUT loses them (see session_counter_test.go).

// SessionTTL is how long a session lives after its last view.
const SessionTTL = 24 * time.Hour

// ViewSession counts one view of session sessionID and returns the session
// as stored. A new session starts with views 0.
func ViewSession(ctx context.Context, sessions *client.Namespace, sessionID string) ([]byte, error) {
	var stored []byte
	_, err := sessions.UpdateWithOptions(ctx, "session/"+sessionID, func(old []byte, found bool) ([]byte, error) {
		data := map[string]any{"created": time.Now().UnixMilli(), "views": 0.0}
		if found {
			if err := json.Unmarshal(old, &data); err != nil {
				return nil, fmt.Errorf("session %s is not JSON: %w", sessionID, err)
			}
			views, _ := data["views"].(float64)
			data["views"] = views + 1
		}
		b, err := json.Marshal(data)
		stored = b
		return b, err
	}, &client.UpdateOptions{TTL: SessionTTL, ContentType: "application/json"})
	if err != nil {
		return nil, err
	}
	return stored, nil
}

// SessionHandler is the documented handler: it counts a view of the
// session named by the X-Session-ID header and answers the session.
func SessionHandler(sessions *client.Namespace) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		session, err := ViewSession(r.Context(), sessions, r.Header.Get("X-Session-ID"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(session)
	}
}
