package postgres

// SetPurgeBatch sets how many keys PurgeNamespace deletes per statement, so
// tests can exercise batching without writing tens of thousands of keys.
func SetPurgeBatch(db *DB, n int) { db.purgeBatch = n }
