-- mlpd's first PostgreSQL schema. Structured values are JSON text (as in the embedded store);
-- dataset cells are little-endian 4-byte words, column after column. Times are nanoseconds
-- since the Unix epoch.
CREATE TABLE models (
  name TEXT PRIMARY KEY,
  next_version BIGINT NOT NULL,
  record TEXT NOT NULL);
CREATE TABLE versions (
  model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
  version BIGINT NOT NULL,
  record TEXT NOT NULL,
  PRIMARY KEY (model, version));
CREATE TABLE datasets (
  id UUID PRIMARY KEY,
  record TEXT NOT NULL,
  features BYTEA NOT NULL,
  targets BYTEA NOT NULL);
CREATE TABLE jobs (
  id UUID PRIMARY KEY,
  model TEXT NOT NULL,
  dataset_id UUID,
  status TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  finished_at BIGINT,
  record TEXT NOT NULL);
CREATE INDEX jobs_by_status ON jobs (status, created_at);
CREATE TABLE epochs (
  job UUID NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  epoch BIGINT NOT NULL,
  record TEXT NOT NULL,
  PRIMARY KEY (job, epoch));
