-- Tokens with ids, names, permissions, scopes, expiry and revocation.
-- Tokens stored before this migration become full tokens of their
-- organization, with ids derived from their digests: tok_ and the first 12
-- bytes of the digest's SHA-256 in hex, the same on every run of this
-- (idempotent) migration and on the embedded engine.

ALTER TABLE tokens ADD COLUMN IF NOT EXISTS id           TEXT;
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS name         TEXT        NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS permissions  TEXT[]      NOT NULL
	DEFAULT ARRAY['namespaces:read', 'namespaces:write', 'keys:read', 'keys:write', 'keys:list', 'usage:read'];
-- NULL: every namespace of the organization, every key.
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS namespaces   UUID[];
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS prefixes     TEXT[];
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS expires_at   TIMESTAMPTZ;
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS created_at   TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS last_used_at TIMESTAMPTZ;
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS revoked_at   TIMESTAMPTZ;
-- The order of revocations, for the caches of every kvd process to learn
-- of them (RevokedSince).
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS revoked_seq  BIGINT;
CREATE SEQUENCE IF NOT EXISTS token_revocations;

UPDATE tokens SET id = 'tok_' || substr(encode(sha256(digest), 'hex'), 1, 24) WHERE id IS NULL;
ALTER TABLE tokens ALTER COLUMN id SET NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS tokens_id_key ON tokens (id);
CREATE INDEX IF NOT EXISTS tokens_org_created_idx ON tokens (org, created_at, id);
CREATE INDEX IF NOT EXISTS tokens_revoked_seq_idx ON tokens (revoked_seq) WHERE revoked_seq IS NOT NULL;
