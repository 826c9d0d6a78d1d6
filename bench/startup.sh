#!/usr/bin/env bash
# Startup time with 100 stored, trained models (784-30-10 each), and the store's size on disk
# with one MNIST-sized dataset (60,000 × 784) in it.
#
#   bench/startup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-18183}
B=http://127.0.0.1:$PORT
cargo build --release --quiet
DIR=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$DIR"' EXIT
start() {
  MLPD_BIND=127.0.0.1:$PORT MLPD_DATA_DIR=$DIR/data MLPD_LOG_FORMAT=json target/release/mlpd >"$DIR/log" 2>&1 &
  SERVER=$!
  for _ in $(seq 200); do curl -sf $B/health >/dev/null && return; sleep 0.02; done
}
python3 - "$DIR" <<'PY'
import json, random, sys
random.seed(0)
rows = [[round(random.random(), 3) for _ in range(784)] for _ in range(64)]
json.dump({"dataset": {"inputs": rows, "labels": [i % 10 for i in range(64)]}, "epochs": 1}, open(f"{sys.argv[1]}/train.json", "w"))
PY
start
for i in $(seq 100); do
  curl -sf -XPOST $B/v1/models -H 'content-type: application/json' \
    -d "{\"name\":\"m$i\",\"inputs\":784,\"layers\":[{\"units\":30,\"activation\":\"sigmoid\"},{\"units\":10,\"activation\":\"softmax\"}]}" >/dev/null
  curl -sf -XPOST $B/v1/models/m$i/train -H 'content-type: application/json' --data-binary @"$DIR/train.json" >/dev/null
done
until [ "$(curl -sf "$B/v1/jobs?status=succeeded" | python3 -c 'import sys,json;print(json.load(sys.stdin)["total"])')" = 100 ]; do sleep 0.2; done
kill $SERVER; wait $SERVER 2>/dev/null || true
T0=$(date +%s.%N); start; T1=$(date +%s.%N)
grep '"state loaded"' "$DIR/log" | python3 -c 'import sys,json; d=json.loads(sys.stdin.read()); print("loaded", d["models"], "models,", d["versions"], "versions,", d["jobs"], "jobs in", d["ms"], "ms (store read)")'
python3 -c "import sys; print(f'process start to first /health answer: {(float(sys.argv[2]) - float(sys.argv[1])) * 1000:.0f} ms')" "$T0" "$T1"
echo "store with 100 models: $(du -sh "$DIR/data" | cut -f1)"
# One MNIST-sized dataset.
python3 - "$DIR/mnist.csv" <<'PY'
import random, sys
random.seed(0)
with open(sys.argv[1], "w") as f:
    f.write("label," + ",".join(f"p{i}" for i in range(784)) + "\n")
    for r in range(60000):
        f.write(f"{r % 10}," + ",".join("0" if random.random() < 0.8 else str(random.randint(1, 255)) for _ in range(784)) + "\n")
PY
BEFORE=$(du -sb "$DIR/data" | cut -f1)
curl -sf -XPOST "$B/v1/datasets?target=label" -H 'content-type: text/csv' --data-binary @"$DIR/mnist.csv" >/dev/null
AFTER=$(du -sb "$DIR/data" | cut -f1)
python3 -c "import sys; print(f'MNIST-sized dataset (60,000 x 784 f32 = 179 MiB raw) adds {(int(sys.argv[2]) - int(sys.argv[1])) / 2**20:.0f} MiB on disk')" "$BEFORE" "$AFTER"
