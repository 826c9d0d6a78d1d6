#!/usr/bin/env bash
# Predict throughput and latency with wrk on loopback, beside the ceiling measured on the same
# server in the same run: a 784→1 identity model (the same request body, next to no compute).
#
#   bench/predict.sh            # DURATION=10s CONNS="16 64" ROUNDS=3 by default
#
# Prints requests/s, p50 and p99 for a one-row predict on 784-30-10 and 784-256-128-10, idle and
# while a training job runs, each as a share of the ceiling; and rows/s for a 100-row predict.
# Idle figures are medians over ROUNDS rounds that run the ceiling and both models in turn
# (consecutive runs on a shared host differ by up to 20%; a share within one round does not
# drift as much), with each round's share listed, tagged with where the machine had its two cores
# during the ceiling's run and the model's (bench/cores.sh: `near` when both runs had them near,
# `far` when both far, else `mixed`), and the median share of the near and of the far rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-"16 64"}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-18181}
B=http://127.0.0.1:$PORT
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet
WORK=$(mktemp -d)
trap 'kill ${SERVER:-} 2>/dev/null || true; rm -rf "$WORK"' EXIT
. bench/cores.sh
train_bench "$WORK/train"
# near or far when both places are, else mixed.
both() { if [ "$1" = "$2" ] && [ "$1" != unknown ]; then echo "$1"; else echo mixed; fi; }
MLPD_DATA_DIR="$WORK/data" MLPD_BIND=127.0.0.1:$PORT MLPD_TRAIN_WORKERS=1 MLPD_LOG_FORMAT=json RUST_LOG=warn target/release/mlpd >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 50); do curl -sf $B/health >/dev/null && break; sleep 0.1; done

post() { curl -sf -XPOST "$B$1" -H 'content-type: application/json' --data-binary "@$2"; }
python3 - "$WORK" <<'PY'
import json, random, sys
w = sys.argv[1]
random.seed(0)
row = lambda: [round(random.random(), 4) for _ in range(784)]
json.dump({"inputs": [row()]}, open(f"{w}/one.json", "w"))
json.dump({"inputs": [row() for _ in range(100)]}, open(f"{w}/hundred.json", "w"))
rows = [row() for _ in range(256)]
json.dump({"inputs": rows, "labels": [i % 10 for i in range(256)]}, open(f"{w}/cls.json", "w"))
json.dump({"inputs": rows, "targets": [[sum(r) / 784] for r in rows]}, open(f"{w}/reg.json", "w"))
big = [row() for _ in range(4000)]
json.dump({"inputs": big, "labels": [i % 10 for i in range(4000)]}, open(f"{w}/big.json", "w"))
models = {
  "ceiling": (784, [{"units": 1, "activation": "identity"}]),
  "n": (784, [{"units": 30, "activation": "sigmoid"}, {"units": 10, "activation": "sigmoid"}]),
  "w": (784, [{"units": 256, "activation": "relu"}, {"units": 128, "activation": "relu"}, {"units": 10, "activation": "softmax"}]),
  "busy": (784, [{"units": 256, "activation": "relu"}, {"units": 128, "activation": "relu"}, {"units": 10, "activation": "softmax"}]),
}
for name, (inputs, layers) in models.items():
    json.dump({"name": name, "inputs": inputs, "layers": layers}, open(f"{w}/model-{name}.json", "w"))
for name, ds in {"ceiling": "reg", "n": "cls", "w": "cls"}.items():
    json.dump({"dataset": json.load(open(f"{w}/{ds}.json")), "epochs": 1}, open(f"{w}/train-{name}.json", "w"))
PY
for m in ceiling n w busy; do post /v1/models "$WORK/model-$m.json" >/dev/null; done
for m in ceiling n w; do
  job=$(post /v1/models/$m/train "$WORK/train-$m.json" | python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])')
  until curl -sf $B/v1/jobs/$job | grep -q '"status":"succeeded"'; do sleep 0.2; done
done
DS=$(post /v1/datasets "$WORK/big.json" | python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])')

lua() { # $1 = body file
  cat >"$WORK/req.lua" <<LUA
local f = io.open("$1", "r"); wrk.body = f:read("*a"); f:close()
wrk.method = "POST"; wrk.headers["Content-Type"] = "application/json"
LUA
}
# run MODEL CONNS BODY → "req/s p50_ms p99_ms non2xx"
run() {
  lua "$3"
  wrk -t2 -c"$2" -d"$DURATION" --latency -s "$WORK/req.lua" "$B/v1/models/$1/predict" >"$WORK/wrk.txt"
  python3 - "$WORK/wrk.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(v):
    n, u = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 1e-3, "ms": 1, "s": 1e3}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1)); p99 = ms(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {p50:.2f} {p99:.2f} {bad.group(1) if bad else 0}")
PY
}

printf '%-34s %6s %10s %9s %9s %8s %6s\n' "case" "conns" "req/s" "p50 ms" "p99 ms" "ceiling" "non2xx"
declare -A CEIL IDLE99
med() { python3 -c 'import statistics, sys; print(f"{statistics.median(map(float, sys.argv[1:])):.6g}")' "$@"; }
for c in $CONNS; do
  # ROUNDS rounds of ceiling, n, w in turn: the host's drift hits all three alike; each figure
  # is the median over the rounds, each share the median of the rounds' own shares.
  declare -A RPS=() P50=() P99=() BAD=() SHARE=() WHERE=()
  for _ in $(seq "$ROUNDS"); do
    for m in ceiling n w; do
      before=$(trip)
      read -r rps p50 p99 bad < <(run $m "$c" "$WORK/one.json")
      where=$(place "$before" "$(trip)")
      RPS[$m]+=" $rps"; P50[$m]+=" $p50"; P99[$m]+=" $p99"; BAD[$m]=$(( ${BAD[$m]:-0} + bad ))
      if [ $m = ceiling ]; then
        ceil=$rps ceil_where=$where
      else
        SHARE[$m]+=" $(echo "100*$rps/$ceil" | bc -l)"
        WHERE[$m]+=" $(both "$ceil_where" "$where")"
      fi
    done
  done
  CEIL[$c]=$(med ${RPS[ceiling]})
  printf '%-34s %6s %10.0f %9s %9s %8s %6s\n' "ceiling 784-1, 1 row" "$c" "${CEIL[$c]}" "$(med ${P50[ceiling]})" "$(med ${P99[ceiling]})" "100%" "${BAD[ceiling]}"
  for m in n w; do
    IDLE99[$m$c]=$(med ${P99[$m]})
    printf '%-34s %6s %10.0f %9s %9s %7.0f%% %6s   shares:%s\n' "$m, 1 row, idle" "$c" "$(med ${RPS[$m]})" "$(med ${P50[$m]})" "${IDLE99[$m$c]}" "$(med ${SHARE[$m]})" "${BAD[$m]}" "$(paste -d' ' <(printf ' %.0f%%\n' ${SHARE[$m]}) <(printf '(%s)\n' ${WHERE[$m]}) | tr '\n' ' ')"
    for place in near far; do
      mapfile -t shares < <(paste -d' ' <(printf '%s\n' ${SHARE[$m]}) <(printf '%s\n' ${WHERE[$m]}) | awk -v p=$place '$2 == p {print $1}')
      if [ ${#shares[@]} -gt 0 ]; then
        printf '%-34s %6s %30s %7.0f%%          (%d of %d rounds)\n' "  cores $place in both runs" "$c" "" "$(med "${shares[@]}")" ${#shares[@]} "$ROUNDS"
      fi
    done
  done
done
# The same with a training job running (784-256-128-10 on 4,000 rows, until canceled).
job=$(curl -sf -XPOST $B/v1/models/busy/train -H 'content-type: application/json' -d "{\"dataset_id\":\"$DS\",\"epochs\":100000}" | python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])')
until curl -sf $B/v1/jobs/$job | grep -q '"status":"running"'; do sleep 0.1; done
for c in $CONNS; do
  for m in n w; do
    read -r rps p50 p99 bad < <(run $m "$c" "$WORK/one.json")
    printf '%-34s %6s %10s %9s %9s %7.0f%% %6s   p99 vs idle %.2fx\n' "$m, 1 row, training" "$c" "$rps" "$p50" "$p99" "$(echo "100*$rps/${CEIL[$c]}" | bc -l)" "$bad" "$(echo "$p99/${IDLE99[$m$c]}" | bc -l)"
  done
done
curl -sf -XPOST $B/v1/jobs/$job/cancel >/dev/null
until curl -sf $B/v1/jobs/$job | grep -q '"status":"canceled"'; do sleep 0.1; done
read -r rps p50 p99 bad < <(run w 16 "$WORK/hundred.json")
printf '%-34s %6s %10s %9s %9s %8s %6s   = %.0f rows/s\n' "w, 100 rows, idle" 16 "$rps" "$p50" "$p99" "-" "$bad" "$(echo "$rps*100" | bc -l)"
