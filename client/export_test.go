package client

import (
	"testing"
	"time"
)

func TestRemainingTTL(t *testing.T) {
	now := time.Date(2026, 6, 18, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		left time.Duration
		ttl  time.Duration
		ok   bool
	}{
		{time.Hour, time.Hour, true},
		{3589*time.Second + 700*time.Millisecond, 3589 * time.Second, true}, // whole seconds, down
		{1500 * time.Millisecond, time.Second, true},
		{time.Millisecond, time.Second, true}, // at least one second
		{0, 0, false},                         // expired at now
		{-time.Hour, 0, false},
	} {
		ttl, ok := RemainingTTL(now.Add(tc.left), now)
		if ttl != tc.ttl || ok != tc.ok {
			t.Errorf("RemainingTTL(now+%v) = %v, %v; want %v, %v", tc.left, ttl, ok, tc.ttl, tc.ok)
		}
	}
}
