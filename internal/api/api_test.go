package api_test

import (
	"testing"

	"github.com/edgekv/kv/internal/api/apitest"
	"github.com/edgekv/kv/internal/kvdtest"
)

// TestAPI runs the black-box suite on the embedded engine.
func TestAPI(t *testing.T) {
	apitest.Run(t, func(t *testing.T, opts ...kvdtest.Option) *kvdtest.Server {
		return kvdtest.Start(t, opts...)
	})
}
