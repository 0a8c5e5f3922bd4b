-- Usage metering. Every statement is idempotent, as in 0001.
--
-- Per organization, namespace and calendar month (UTC), the month's
-- operation counts and its storage changes: delta_sum is the sum of the
-- changes of the namespace's stored bytes (key plus value bytes) that fall
-- in the month, weighted_sum the sum of each change times its offset from
-- the month's start in nanoseconds. NUMERIC keeps the weighted sums exact:
-- a terabyte stored for a month is about 2.7e27 byte-nanoseconds, past
-- BIGINT. Reports derive stored bytes over time from these sums (see
-- usage.go).
--
-- No hot row: every writing statement adds to the row of one shard, a small
-- random number it picks (0..15), with INSERT ... ON CONFLICT DO UPDATE
-- SET x = x + excluded.x, and reports sum over the shards. With a single row
-- per namespace and month, every write to a namespace from every kvd
-- process would queue on that row's lock until the writer's commit (and
-- on CockroachDB and YugabyteDB contend on one key); sixteen rows let
-- sixteen writers proceed at once.
--
-- The table has no foreign key to namespaces: usage outlives a purged
-- namespace, for billing.
CREATE TABLE IF NOT EXISTS ns_usage (
	org          TEXT     NOT NULL,
	ns_id        UUID     NOT NULL,
	month        DATE     NOT NULL, -- the month's first day
	shard        SMALLINT NOT NULL,
	reads        BIGINT   NOT NULL DEFAULT 0,
	writes       BIGINT   NOT NULL DEFAULT 0,
	deletes      BIGINT   NOT NULL DEFAULT 0,
	lists        BIGINT   NOT NULL DEFAULT 0,
	delta_sum    BIGINT   NOT NULL DEFAULT 0,
	weighted_sum NUMERIC  NOT NULL DEFAULT 0,
	-- One namespace's rows are one range (MarkDeleting sums them), and one
	-- organization's rows one larger range (reports).
	PRIMARY KEY (org, ns_id, month, shard)
);

-- Keys stored before metering existed start counting now. The engine keeps
-- the sum of a live namespace's delta_sum equal to the size of the rows in
-- its keys table, expired ones not yet swept included (reports subtract
-- those at their expiry), so every row is added: a live key at now, an
-- expired one at its expiry, where reports also subtract it (it adds
-- nothing to the integral). A namespace being deleted has stopped counting
-- and gets nothing. Rows of shard 0 already there (a re-run) are kept.
INSERT INTO ns_usage (org, ns_id, month, shard, delta_sum, weighted_sum)
SELECT org, ns_id, month::date, 0, sum(size),
	sum(size::numeric * (at - extract(epoch FROM month)::bigint * 1000000000))
FROM (
	SELECT org, ns_id, size, at,
		date_trunc('month', to_timestamp(at / 1000000000) AT TIME ZONE 'UTC') AS month
	FROM (
		SELECT n.org, k.ns_id,
			(octet_length(k.key) + octet_length(k.value))::bigint AS size,
			CASE WHEN k.expires_at <= t0.now THEN k.expires_at ELSE t0.now END AS at
		FROM namespaces n
		JOIN keys k ON k.ns_id = n.id
		CROSS JOIN (SELECT (extract(epoch FROM now()) * 1000000000)::bigint AS now) t0
		WHERE n.status = 'provision_ok'
	) a
) e
GROUP BY org, ns_id, month
ON CONFLICT (org, ns_id, month, shard) DO NOTHING;
