#!/usr/bin/env bash
# Dataset ingest: POST an MNIST-shaped CSV (60,000 rows × 784 pixel columns + a label column,
# ≈ 110 MB) to a release server and report the time and the server's peak memory (VmHWM).
#
#   bench/ingest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-18182}
B=http://127.0.0.1:$PORT
cargo build --release --quiet
WORK=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
python3 - "$WORK/mnist.csv" <<'PY'
import random, sys
random.seed(0)
with open(sys.argv[1], "w") as f:
    f.write("label," + ",".join(f"p{i}" for i in range(784)) + "\n")
    for r in range(60000):
        # MNIST-like: ~80% zeros, the rest 1..255.
        px = ["0" if random.random() < 0.8 else str(random.randint(1, 255)) for _ in range(784)]
        f.write(f"{r % 10}," + ",".join(px) + "\n")
PY
SIZE=$(stat -c %s "$WORK/mnist.csv")
MLPD_BIND=127.0.0.1:$PORT MLPD_LOG_FORMAT=json RUST_LOG=warn target/release/mlpd >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 50); do curl -sf $B/health >/dev/null && break; sleep 0.1; done
hwm() { awk '/VmHWM/ {print $2}' /proc/$SERVER/status; }
BEFORE=$(hwm)
T0=$(date +%s.%N)
OUT=$(curl -sf -XPOST "$B/v1/datasets?target=label&name=mnist" -H 'content-type: text/csv' --data-binary "@$WORK/mnist.csv")
T1=$(date +%s.%N)
AFTER=$(hwm)
echo "$OUT" | python3 -c 'import sys,json; d=json.load(sys.stdin); print("stored", d["rows"], "rows x", d["input_width"], "features,", len(d["classes"]["values"]), "classes")'
python3 - "$SIZE" "$T0" "$T1" "$BEFORE" "$AFTER" <<'PY'
import sys
size, t0, t1, before, after = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
matrix = 60000 * 784 * 4 / 2**20
print(f"CSV {size / 2**20:.0f} MiB ingested in {t1 - t0:.2f} s ({size / 2**20 / (t1 - t0):.0f} MiB/s)")
print(f"server peak RSS {before / 1024:.0f} MiB before, {after / 1024:.0f} MiB after; the f32 matrix alone is {matrix:.0f} MiB")
PY
