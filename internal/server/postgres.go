package server

import (
	"context"
	"errors"

	"github.com/edgekv/kv/internal/store"
)

// openPostgres opens the PostgreSQL engine.
func openPostgres(ctx context.Context, url string) (store.Store, error) {
	return nil, errors.New("the PostgreSQL engine is not built yet")
}
