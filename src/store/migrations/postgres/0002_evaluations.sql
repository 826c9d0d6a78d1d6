-- Evaluations of versions (deleted with their version). `seq` is the insertion order.
CREATE TABLE evaluations (
  id UUID PRIMARY KEY,
  seq BIGSERIAL NOT NULL,
  model TEXT NOT NULL,
  version BIGINT NOT NULL,
  record TEXT NOT NULL,
  FOREIGN KEY (model, version) REFERENCES versions(model, version) ON DELETE CASCADE);
CREATE INDEX evaluations_of_version ON evaluations (model, version, seq);
