-- Revisions: every write of a key takes the next value of one sequence, so
-- no revision is ever given twice, in any kvd process. Keys written before
-- this migration have revision 0 until they are written again. ETags are
-- made of revisions.
CREATE SEQUENCE IF NOT EXISTS key_revisions AS BIGINT;
ALTER TABLE keys ADD COLUMN IF NOT EXISTS revision BIGINT NOT NULL DEFAULT 0;
