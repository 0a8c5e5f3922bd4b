package postgres

// SetPurgeBatch sets how many keys PurgeNamespace deletes per statement, so
// tests can exercise batching without writing tens of thousands of keys.
func SetPurgeBatch(db *DB, n int) { db.purgeBatch = n }

// NewConns is how many connections db's pool has made.
func NewConns(db *DB) int64 { return db.pool.Stat().NewConnsCount() }
