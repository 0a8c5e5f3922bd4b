-- The schema of kvd's PostgreSQL engine. Every statement is idempotent
-- (IF NOT EXISTS) so that a migration can be re-run safely on databases
-- whose DDL is not transactional (YugabyteDB).

-- Namespaces. Ids are random (version 4) UUIDs, so inserts spread over the
-- primary key instead of piling onto its last page (or, on CockroachDB and
-- YugabyteDB, onto one range/tablet).
CREATE TABLE IF NOT EXISTS namespaces (
	id           UUID        NOT NULL PRIMARY KEY,
	org          TEXT        NOT NULL,
	name         TEXT        NOT NULL,
	status       TEXT        NOT NULL,
	created_at   TIMESTAMPTZ NOT NULL,
	updated_at   TIMESTAMPTZ NOT NULL,
	-- The lifecycle lease: which worker provisions or purges the namespace,
	-- and until when. A NULL or past lease_until is no lease.
	lease_holder TEXT,
	lease_until  TIMESTAMPTZ,
	CONSTRAINT namespaces_org_name_key UNIQUE (org, name)
);

-- ListNamespaces: one organization's namespaces, oldest first, ties by id.
CREATE INDEX IF NOT EXISTS namespaces_org_created_idx ON namespaces (org, created_at, id);

-- ClaimLifecycleJob: the few namespaces that have lifecycle work to do.
CREATE INDEX IF NOT EXISTS namespaces_lifecycle_idx ON namespaces (updated_at)
	WHERE status IN ('pending', 'deleting');

-- Keys. The primary key makes one namespace's keys one contiguous range
-- ordered by key bytes: listing is a range scan with no sort, and purging a
-- namespace is one range deletion. Keys are BYTEA rather than TEXT because
-- BYTEA compares bytewise on every engine, whatever the database's collation.
-- Times are Unix nanoseconds: key timestamps are shown with nanoseconds and
-- expiry is compared at nanosecond precision, which TIMESTAMPTZ (microseconds)
-- cannot hold.
CREATE TABLE IF NOT EXISTS keys (
	ns_id        UUID   NOT NULL,
	key          BYTEA  NOT NULL,
	value        BYTEA  NOT NULL,
	content_type TEXT   NOT NULL,
	updated_at   BIGINT NOT NULL,
	expires_at   BIGINT, -- NULL: never expires
	-- version is 1 when a write created the key (it was absent or expired)
	-- and grows by one on each replacement; PutKey reports created from it.
	version      BIGINT NOT NULL,
	PRIMARY KEY (ns_id, key)
);

-- SweepExpired: keys with an expiry, soonest first.
CREATE INDEX IF NOT EXISTS keys_expires_idx ON keys (expires_at)
	WHERE expires_at IS NOT NULL;

-- Bearer tokens, by the SHA-256 digest of the token.
CREATE TABLE IF NOT EXISTS tokens (
	digest BYTEA NOT NULL PRIMARY KEY,
	org    TEXT  NOT NULL
);
