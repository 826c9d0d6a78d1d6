-- Idempotency keys of the creating POSTs: reserved by `owner` while the work runs (renewed
-- at `renewed_at`), then the answer (`status`, `headers` as a JSON list of pairs, `body`) with
-- `owner` NULL. Times are Unix nanoseconds. A key expires `--idempotency-ttl-secs` after
-- `claimed_at`.
CREATE TABLE idempotency_keys (
  key TEXT PRIMARY KEY,
  fingerprint TEXT NOT NULL,
  owner UUID,
  claimed_at BIGINT NOT NULL,
  renewed_at BIGINT NOT NULL,
  status INTEGER,
  headers TEXT,
  body BYTEA);
CREATE INDEX idempotency_keys_claimed ON idempotency_keys (claimed_at);
