package server_test

import (
	"testing"

	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/server/servertest"
)

// TestAPI runs the black-box suite on the embedded engine.
func TestAPI(t *testing.T) {
	servertest.Run(t, func(t *testing.T, opts ...kvdtest.Option) *kvdtest.Server {
		return kvdtest.Start(t, opts...)
	})
}
