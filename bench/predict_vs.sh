#!/usr/bin/env bash
# One-row predict throughput of this checkout beside another revision of mlpd, in one run:
# both release binaries serve the same 784-30-10 classifier (trained by the same request) and
# wrk loads them in alternating rounds, so that the machine's noise hits both alike.
#
#   bench/predict_vs.sh                    # against e42fcf6, the last commit before real tables
#   bench/predict_vs.sh <rev> [body]       # body: inputs (default), records
#   ROUNDS=8 DURATION=5s CONNS=16 bench/predict_vs.sh e42fcf6
#
# The peer is built in a temporary git worktree into target/bench-peer (kept, so a second run
# does not build it again). Prints each round's requests/s and the medians' ratio (this / peer).
set -euo pipefail
cd "$(dirname "$0")/.."
PEER_REV=${1:-e42fcf6}
BODY=${2:-inputs}
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-16}
PORTS=(18301 18302)
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

cargo build --release --quiet
PEER_TARGET=$PWD/target/bench-peer
PEER_SRC=$(mktemp -d)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  git worktree remove --force "$PEER_SRC" 2>/dev/null || rm -rf "$PEER_SRC"
  rm -rf "$WORK"
}
trap cleanup EXIT
git worktree add --quiet --detach "$PEER_SRC" "$PEER_REV"
(cd "$PEER_SRC" && CARGO_TARGET_DIR=$PEER_TARGET cargo build --release --quiet --locked)
BINS=("target/release/mlpd" "$PEER_TARGET/release/mlpd")
NAMES=("this ($(git rev-parse --short HEAD))" "peer ($(git rev-parse --short "$PEER_REV"))")

python3 - "$WORK" "$BODY" <<'PY'
import json, random, sys
w, body = sys.argv[1], sys.argv[2]
random.seed(0)
row = lambda: [round(random.random(), 4) for _ in range(784)]
rows = [row() for _ in range(256)]
json.dump({"name": "n", "inputs": 784,
           "layers": [{"units": 30, "activation": "sigmoid"}, {"units": 10, "activation": "sigmoid"}]},
          open(f"{w}/model.json", "w"))
json.dump({"dataset": {"inputs": rows, "labels": [i % 10 for i in range(256)]}, "epochs": 1, "seed": 1},
          open(f"{w}/train.json", "w"))
one = row()
if body == "records":
    json.dump({"records": [{f"x{i}": v for i, v in enumerate(one)}]}, open(f"{w}/one.json", "w"))
else:
    json.dump({"inputs": [one]}, open(f"{w}/one.json", "w"))
PY

for i in 0 1; do
  B=http://127.0.0.1:${PORTS[$i]}
  MLPD_DATA_DIR="$WORK/data$i" MLPD_BIND=127.0.0.1:${PORTS[$i]} MLPD_TRAIN_WORKERS=1 RUST_LOG=warn \
    "${BINS[$i]}" >"$WORK/server$i.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -sf "$B/health" >/dev/null && break; sleep 0.1; done
  curl -sf -XPOST "$B/v1/models" -H 'content-type: application/json' --data-binary "@$WORK/model.json" >/dev/null
  job=$(curl -sf -XPOST "$B/v1/models/n/train" -H 'content-type: application/json' --data-binary "@$WORK/train.json" |
    python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])')
  until curl -sf "$B/v1/jobs/$job" | grep -q '"status":"succeeded"'; do sleep 0.2; done
  curl -sf -XPOST "$B/v1/models/n/predict" -H 'content-type: application/json' --data-binary "@$WORK/one.json" >/dev/null ||
    { echo "${NAMES[$i]} refuses the $BODY body" >&2; exit 1; }
done

cat >"$WORK/req.lua" <<LUA
local f = io.open("$WORK/one.json", "r"); wrk.body = f:read("*a"); f:close()
wrk.method = "POST"; wrk.headers["Content-Type"] = "application/json"
LUA
rps() {
  wrk -t2 -c"$CONNS" -d"$DURATION" -s "$WORK/req.lua" "http://127.0.0.1:$1/v1/models/n/predict" |
    awk '/Non-2xx/ {bad=1} /Requests\/sec/ {r=$2} END {if (bad) print "ERR"; else print r}'
}
: >"$WORK/rps"
echo "one-row predict ($BODY), $CONNS connections, $DURATION per round, alternating"
for r in $(seq "$ROUNDS"); do
  # Alternate which goes first, so neither always follows the other's warm-up.
  order=(0 1); [ $((r % 2)) -eq 0 ] && order=(1 0)
  for i in "${order[@]}"; do
    v=$(rps "${PORTS[$i]}")
    [ "$v" = ERR ] && { echo "${NAMES[$i]}: non-2xx answers" >&2; exit 1; }
    echo "$i $v" >>"$WORK/rps"
    printf 'round %d  %-24s %10.0f req/s\n' "$r" "${NAMES[$i]}" "$v"
  done
done
python3 - "$WORK/rps" "${NAMES[@]}" <<'PY'
import statistics, sys
runs = {0: [], 1: []}
for line in open(sys.argv[1]):
    i, v = line.split()
    runs[int(i)].append(float(v))
m = [statistics.median(runs[i]) for i in (0, 1)]
print(f"median  {sys.argv[2]:<24} {m[0]:10.0f} req/s")
print(f"median  {sys.argv[3]:<24} {m[1]:10.0f} req/s")
print(f"ratio this / peer = {m[0] / m[1]:.3f}")
PY
