package api_test

import (
	"testing"

	"github.com/edgekv/kv/internal/api/apitest"
	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestAPIPostgres runs the black-box suite on the PostgreSQL engine.
func TestAPIPostgres(t *testing.T) {
	apitest.Run(t, func(t *testing.T, opts ...kvdtest.Option) *kvdtest.Server {
		return kvdtest.Start(t, append([]kvdtest.Option{kvdtest.WithStore(pgtest.URL(t))}, opts...)...)
	})
}
