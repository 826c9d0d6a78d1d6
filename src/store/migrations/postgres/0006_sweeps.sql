-- Hyperparameter sweeps: a sweep's definition, trials (their job ids) and, once ended, its
-- result live in `record` (JSON, as other records); `status` beside it so that the one
-- transaction that ends a sweep can tell it is still running.
CREATE TABLE sweeps (
  id UUID PRIMARY KEY,
  model TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  status TEXT NOT NULL,
  record TEXT NOT NULL);
CREATE INDEX sweeps_by_status ON sweeps (status, created_at);
