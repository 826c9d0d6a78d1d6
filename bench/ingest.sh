#!/usr/bin/env bash
# Dataset ingest, this tree against a base commit in the same run: diamonds (2.5 MB, 54k rows,
# three text columns) and an MNIST-shaped numeric CSV (60,000 rows × 784 pixels + a label,
# ≈ 110 MB), each POSTed ROUNDS times to a release server of each build, interleaved (base,
# this, base, this, …) so both see the same machine load. Prints each upload's median time
# (request sent → 201 with the dataset stored), the servers' peak memory, and this build's
# gzip uploads of the same files.
#
#   bench/ingest.sh [BASE_REV]     (default HEAD~1; ROUNDS=5)
#
# The base is built from `git archive BASE_REV` into this tree's target directory, so only the
# mlpd crate itself is compiled again (twice: base, then this tree back).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BASE_REV=${1:-HEAD~1}
ROUNDS=${ROUNDS:-5}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "building the base ($(git rev-parse --short "$BASE_REV")) and this tree, release…" >&2
mkdir "$WORK/base"
git archive "$BASE_REV" | tar -x -C "$WORK/base"
(cd "$WORK/base" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release --quiet)
cp target/release/mlpd "$WORK/mlpd-base"
cargo build --release --quiet
cp target/release/mlpd "$WORK/mlpd-this"

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
cp datasets/diamonds.csv "$WORK/diamonds.csv"
gzip -k -6 "$WORK/mnist.csv" "$WORK/diamonds.csv"

start() { # name port → starts a server of binary $WORK/mlpd-$name on port
  mkdir -p "$WORK/data-$1"
  MLPD_BIND=127.0.0.1:$2 MLPD_DATA_DIR="$WORK/data-$1" MLPD_LOG_FORMAT=json RUST_LOG=warn \
    "$WORK/mlpd-$1" >"$WORK/server-$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/health" >/dev/null && return; sleep 0.1; done
  echo "server $1 did not start" >&2
  exit 1
}
PORT_BASE=${PORT:-18182}
PORT_THIS=$((PORT_BASE + 1))
start base "$PORT_BASE"
BASE_PID=${PIDS[-1]}
start this "$PORT_THIS"
THIS_PID=${PIDS[-1]}

upload() { # port file query [encoding] → prints seconds; deletes the dataset after
  local port=$1 file=$2 query=$3 enc=${4:-} out t id
  local args=(-s -o "$WORK/resp.json" -w '%{http_code} %{time_total}' -XPOST
    "http://127.0.0.1:$port/v1/datasets?$query" -H 'content-type: text/csv' --data-binary "@$file")
  [ -n "$enc" ] && args+=(-H "content-encoding: $enc")
  out=$(curl "${args[@]}")
  if [ "${out%% *}" != 201 ]; then
    echo "upload of $file to port $port: HTTP $out: $(head -c 300 "$WORK/resp.json")" >&2
    exit 1
  fi
  t=${out#* }
  id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/resp.json")
  curl -sf -XDELETE "http://127.0.0.1:$port/v1/datasets/$id" >/dev/null
  echo "$t"
}

declare -A T
for _ in $(seq "$ROUNDS"); do
  for f in diamonds mnist; do
    q="target=price"; [ $f = mnist ] && q="target=label"
    T[$f-base]+="$(upload $PORT_BASE "$WORK/$f.csv" "$q") "
    T[$f-this]+="$(upload $PORT_THIS "$WORK/$f.csv" "$q") "
    T[$f-gzip]+="$(upload $PORT_THIS "$WORK/$f.csv.gz" "$q" gzip) "
  done
done
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

echo "load: $(uptime | sed 's/.*load average/load average/')"
python3 - "$ROUNDS" "$(stat -c %s "$WORK/diamonds.csv")" "$(stat -c %s "$WORK/diamonds.csv.gz")" \
  "$(stat -c %s "$WORK/mnist.csv")" "$(stat -c %s "$WORK/mnist.csv.gz")" \
  "${T[diamonds-base]}" "${T[diamonds-this]}" "${T[diamonds-gzip]}" \
  "${T[mnist-base]}" "${T[mnist-this]}" "${T[mnist-gzip]}" \
  "$(hwm "$BASE_PID")" "$(hwm "$THIS_PID")" "$(git rev-parse --short "$BASE_REV")" <<'PY'
import statistics as st, sys
a = sys.argv[1:]
rounds = int(a[0])
dsz, dgz, msz, mgz = map(int, a[1:5])
times = [[float(x) for x in s.split()] for s in a[5:11]]
hwm_base, hwm_this, base = int(a[11]), int(a[12]), a[13]
med = [st.median(t) for t in times]
print(f"median of {rounds} uploads each (request → 201, stored); base = {base}")
print(f"{'file':<10}{'size':>10}{'base':>10}{'this':>10}{'this/base':>11}{'gzip':>10}{'gz size':>10}")
for name, size, gz, (b, t, g) in [("diamonds", dsz, dgz, med[0:3]), ("mnist", msz, mgz, med[3:6])]:
    print(f"{name:<10}{size / 2**20:>8.1f}MB{b:>9.3f}s{t:>9.3f}s{t / b:>10.2f}x{g:>9.3f}s{size / gz:>8.1f}x")
print(f"all times (s): " + "; ".join(f"{n} {' '.join(f'{x:.3f}' for x in t)}" for n, t in zip(
    ["diamonds base", "diamonds this", "diamonds gzip", "mnist base", "mnist this", "mnist gzip"], times)))
print(f"server peak RSS: base {hwm_base / 1024:.0f} MiB, this {hwm_this / 1024:.0f} MiB "
      f"(the MNIST f32 matrix alone is {60000 * 785 * 4 / 2**20:.0f} MiB)")
print(f"target: diamonds stored in under 1 s: {'met' if med[1] < 1 else 'NOT met'} ({med[1]:.3f} s); "
      f"MNIST no slower than the base: {'met' if med[4] <= med[3] * 1.05 else 'NOT met'} "
      f"({med[4] / med[3]:.2f}x, 5% allowed for noise)")
PY
