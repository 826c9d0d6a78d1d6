#!/usr/bin/env bash
# One-row predict throughput with the embedded store vs PostgreSQL, in the same run: two servers
# from the same binary, iris 4-16-3 trained on each, wrk against each in turn (3 rounds,
# interleaved). Predictions never touch the store, so the ratio should be ~1.
#
#   bench/store_predict.sh [BINARY]      # default target/release/mlpd (built if missing)
#   PG=postgres://postgres@127.0.0.1:5432/postgres DURATION=5s CONNS=16 bench/store_predict.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/mlpd}
PG=${PG:-${MLPD_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-16}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
[ -x "$BIN" ] || cargo build --release --quiet
WORK=$(mktemp -d)
DB=mlpd_bench_$$
psql "$PG" -XAtqc "CREATE DATABASE $DB" >/dev/null
PGDB=$(python3 -c 'import sys; u=sys.argv[1]; b,_,_=u.rpartition("/"); print(b+"/"+sys.argv[2])' "$PG" "$DB")
cleanup() {
  kill "$S1" "$S2" 2>/dev/null || true
  wait 2>/dev/null || true
  psql "$PG" -XAtqc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
RUST_LOG=warn MLPD_TRAIN_WORKERS=1 "$BIN" --bind 127.0.0.1:18291 --data-dir "$WORK/data" >"$WORK/s1.log" 2>&1 &
S1=$!
RUST_LOG=warn MLPD_TRAIN_WORKERS=1 MLPD_DATABASE_URL=$PGDB "$BIN" --bind 127.0.0.1:18292 >"$WORK/s2.log" 2>&1 &
S2=$!
for port in 18291 18292; do
  B=http://127.0.0.1:$port
  for _ in $(seq 100); do curl -sf $B/health >/dev/null && break; sleep 0.1; done
  curl -sf -XPOST $B/v1/models -H 'content-type: application/json' \
    -d '{"name":"iris","inputs":4,"layers":[{"units":16,"activation":"relu"},{"units":3,"activation":"softmax"}]}' >/dev/null
  ds=$(curl -sf -XPOST "$B/v1/datasets?target=species" -H 'content-type: text/csv' --data-binary @datasets/iris.csv | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  job=$(curl -sf -XPOST $B/v1/models/iris/train -H 'content-type: application/json' -d "{\"dataset_id\":\"$ds\",\"epochs\":20}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  for _ in $(seq 300); do
    curl -sf $B/v1/jobs/$job | grep -q '"status":"succeeded"' && break
    sleep 0.1
  done
done
cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"inputs": [[5.1, 3.5, 1.4, 0.2]]}'
LUA
rps() { wrk -t2 -c"$CONNS" -d"$DURATION" -s "$WORK/post.lua" "http://127.0.0.1:$1/v1/models/iris/predict" | awk '/Requests\/sec/ {print $2}'; }
echo "load: $(uptime | sed 's/.*load average/load average/')"
for round in 1 2 3; do
  e=$(rps 18291); p=$(rps 18292)
  python3 -c "import sys; e,p=map(float,sys.argv[1:]); print(f'round $round: embedded {e:.0f} req/s, postgres {p:.0f} req/s, ratio {p/e:.3f}')" "$e" "$p"
done
echo "load: $(uptime | sed 's/.*load average/load average/')"
