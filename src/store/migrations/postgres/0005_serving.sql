-- Serving control: a model's pin and aliases live in its record (JSON, as the rest of it);
-- every change of what it serves or names is kept here, deleted with the model. `seq` is the
-- insertion order.
CREATE TABLE serving_history (
  seq BIGSERIAL PRIMARY KEY,
  model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
  record TEXT NOT NULL);
CREATE INDEX serving_history_of_model ON serving_history (model, seq);
