// Package pgopstest holds tests of kvd on PostgreSQL as it is operated for
// real: a failover managed by pg_auto_failover under load, a database that
// goes away or is not there yet, and a backup taken with pg_dump restored
// into another database. The servers are real (internal/pgtest starts
// them), so is kvd (internal/kvdtest), and clients talk to it over HTTP on
// loopback. The package has no code of its own outside its tests.
package pgopstest
