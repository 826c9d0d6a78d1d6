-- The job queue shared by replicas: a running job's lease (its replica and expiry, in the
-- database's clock), a cancel request any replica may set, and each job's training input, so
-- that whichever replica claims the job can run it (deleted when the job ends).
ALTER TABLE jobs ADD COLUMN owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until TIMESTAMPTZ;
ALTER TABLE jobs ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX jobs_by_owner ON jobs (owner) WHERE owner IS NOT NULL;
CREATE TABLE job_inputs (
  job UUID PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
  record TEXT NOT NULL,
  features BYTEA NOT NULL,
  targets BYTEA NOT NULL);
