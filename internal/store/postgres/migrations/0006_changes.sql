-- The change feed (changes.go). Every statement is idempotent, as in 0001.
--
-- Every statement or transaction that changes a key records the change in
-- the same commit: a put under the key's new revision, a delete or a swept
-- expiry under a revision of its own. A namespace's changes are one range
-- of the primary key, in revision order, which is how the feed reads them.
-- xid is the writing transaction's id: Snapshot tells by it the changes
-- its snapshot does not see. The columns follow keys': times are Unix
-- nanoseconds, keys BYTEA. Only puts have size (the value's length),
-- content_type, updated_at and expires_at (NULL: never), and value, which
-- is kept only up to 64 KiB (store.MaxChangeValue), NULL above.
--
-- Processes of an earlier version, during a rolling upgrade, write keys
-- without recording their changes: the feed starts to be complete once
-- every process runs this version.
CREATE TABLE IF NOT EXISTS changes (
	ns_id        UUID     NOT NULL,
	rev          BIGINT   NOT NULL,
	xid          XID8     NOT NULL DEFAULT pg_current_xact_id(),
	kind         SMALLINT NOT NULL, -- store.ChangeKind: 1 put, 2 delete, 3 expire
	key          BYTEA    NOT NULL,
	at           BIGINT   NOT NULL, -- the now of the call that made the change
	size         BIGINT,
	content_type TEXT,
	updated_at   BIGINT,
	expires_at   BIGINT,
	value        BYTEA,
	PRIMARY KEY (ns_id, rev)
);

-- CompactChanges: the oldest changes of every namespace. The one index
-- besides the primary key, since every write adds to each.
CREATE INDEX IF NOT EXISTS changes_at_idx ON changes (at);

-- Per namespace, the highest revision compaction removed: the feed reads
-- only after it. A namespace with no row had nothing removed. A table of
-- its own rather than a column of namespaces: updating a namespace row
-- would wait for, and hold up, every key write of the namespace, which
-- locks that row FOR SHARE.
CREATE TABLE IF NOT EXISTS change_horizons (
	ns_id UUID   NOT NULL PRIMARY KEY,
	rev   BIGINT NOT NULL
);

-- kv_next_revision takes the next revision for the calling transaction,
-- having first made sure that the transaction has its id. The feed's head
-- rests on that order: a transaction that holds a revision got its id
-- before the revision existed, so a snapshot taken after the sequence was
-- read at or past the revision, with the next transaction id read after
-- it, shows the transaction running unless it has ended. (Without it, a
-- transaction's id comes with its first write, which may come after its
-- nextval.) PL/pgSQL runs the two steps in order; pg_current_xact_id is
-- STABLE, so SQL could drop a call whose result is unused.
CREATE OR REPLACE FUNCTION kv_next_revision() RETURNS BIGINT
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	PERFORM pg_current_xact_id();
	RETURN nextval('key_revisions');
END
$$;

-- kv_check_create checks a PUT that created key k of namespace ns (its
-- statement saw no row of it) under revision r, once its insert has won:
-- that no change of the key with a higher revision committed first.
-- Such a PUT took r before its insert looked for a conflicting row,
-- which can wait for a transaction that creates the key and deletes it
-- again (a batch, or an insert then a delete), and then find none; that
-- transaction's revisions may be above r, and the feed would replay the
-- two out of the order they committed in. Being VOLATILE, its query sees
-- what committed after its statement began; once the insert has won,
-- whatever else changes the key waits for the PUT. The failure is a
-- serialization_failure: the statement is rolled back whole, and the
-- engine runs it again.
CREATE OR REPLACE FUNCTION kv_check_create(ns UUID, k BYTEA, r BIGINT) RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	IF EXISTS (SELECT 1 FROM changes WHERE ns_id = ns AND rev > r AND key = k) THEN
		RAISE EXCEPTION 'key % changed while it was created', k USING ERRCODE = 'serialization_failure';
	END IF;
	RETURN true;
END
$$;

-- The head also needs every session to take revisions from the sequence
-- itself: a session caching values ahead would hand out, later, values
-- below the one the head read. CACHE 1 is the default; this pins it.
ALTER SEQUENCE key_revisions CACHE 1;
