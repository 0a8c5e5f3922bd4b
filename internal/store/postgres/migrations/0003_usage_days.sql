-- Usage by day. Every statement is idempotent, as in 0001.
--
-- Per organization, calendar day (UTC), namespace and shard, the same
-- figures as ns_usage has per month (0002), with weighted_sum taken from the
-- day's start: every statement that adds to a month's row adds the same
-- counts and changes to the rows of their days, in the same statement.
-- Reports split a month by day from these rows (usage.go); the monthly
-- figures come from ns_usage alone, as before. Days before this migration
-- have no rows: their operations count in their month only.
--
-- The key leads with the day, so that a month of an organization is one
-- range whether a report asks for all its namespaces or one.
CREATE TABLE IF NOT EXISTS ns_usage_day (
	org          TEXT     NOT NULL,
	day          DATE     NOT NULL,
	ns_id        UUID     NOT NULL,
	shard        SMALLINT NOT NULL,
	reads        BIGINT   NOT NULL DEFAULT 0,
	writes       BIGINT   NOT NULL DEFAULT 0,
	deletes      BIGINT   NOT NULL DEFAULT 0,
	lists        BIGINT   NOT NULL DEFAULT 0,
	delta_sum    BIGINT   NOT NULL DEFAULT 0,
	weighted_sum NUMERIC  NOT NULL DEFAULT 0,
	PRIMARY KEY (org, day, ns_id, shard)
);
