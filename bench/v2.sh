#!/usr/bin/env bash
# The Open Inference Protocol's cost next to /v1, on one server in one run, with wrk on loopback:
#
#   bench/v2.sh                 # DURATION=10s CONNS=16; MLPD_BIN=target/release/mlpd (built if absent)
#
# Prints req/s and latency for a one-row predict on a 784-30-10 classifier through /v1 predict,
# /v2 infer with JSON tensors and /v2 infer with binary tensors (each as a share of /v1), then a
# 1,000-row /v2 infer with binary tensors against the same rows as JSON (rows/s and the ratio).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-16}
PORT=${PORT:-18182}
BIN=${MLPD_BIN:-target/release/mlpd}
B=http://127.0.0.1:$PORT
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
[ -x "$BIN" ] || cargo build --release --quiet
WORK=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
MLPD_BIND=127.0.0.1:$PORT MLPD_DATA_DIR=$WORK/data MLPD_TRAIN_WORKERS=1 MLPD_LOG_FORMAT=json RUST_LOG=warn \
  "$BIN" >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 50); do curl -sf $B/health >/dev/null && break; sleep 0.1; done

# Bodies: the same rows in /v1 JSON, V2 JSON and V2 binary (JSON header + little-endian f32).
python3 - "$WORK" <<'PY'
import json, random, struct, sys
w = sys.argv[1]
random.seed(0)
row = lambda: [round(random.random(), 4) for _ in range(784)]
def write(name, rows):
    json.dump({"inputs": rows}, open(f"{w}/{name}.v1.json", "w"))
    tensor = {"name": "input", "shape": [len(rows), 784], "datatype": "FP32"}
    json.dump({"inputs": [dict(tensor, data=rows)]}, open(f"{w}/{name}.v2.json", "w"))
    head = json.dumps({"inputs": [dict(tensor, parameters={"binary_data_size": 4 * 784 * len(rows)})],
                       "parameters": {"binary_data_output": True}}).encode()
    body = head + b"".join(struct.pack("<784f", *r) for r in rows)
    open(f"{w}/{name}.v2.bin", "wb").write(body)
    open(f"{w}/{name}.v2.len", "w").write(str(len(head)))
write("one", [row()])
write("thousand", [row() for _ in range(1000)])
rows = [row() for _ in range(256)]
json.dump({"name": "n", "inputs": 784, "layers": [{"units": 30, "activation": "sigmoid"}, {"units": 10, "activation": "softmax"}]},
          open(f"{w}/model.json", "w"))
json.dump({"dataset": {"inputs": rows, "labels": [i % 10 for i in range(256)]}, "epochs": 1}, open(f"{w}/train.json", "w"))
PY
post() { curl -sf -XPOST "$B$1" -H 'content-type: application/json' --data-binary "@$2"; }
post /v1/models "$WORK/model.json" >/dev/null
job=$(post /v1/models/n/train "$WORK/train.json" | python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])')
until curl -sf $B/v1/jobs/$job | grep -q '"status":"succeeded"'; do sleep 0.2; done
# Each format answers, and alike (a smoke check before timing).
post /v1/models/n/predict "$WORK/one.v1.json" >/dev/null
post /v2/models/n/infer "$WORK/one.v2.json" >/dev/null
curl -sf -XPOST $B/v2/models/n/infer -H "inference-header-content-length: $(cat "$WORK/one.v2.len")" \
  -H 'content-type: application/octet-stream' --data-binary "@$WORK/one.v2.bin" >/dev/null

# run PATH BODY [HEADER_LEN] → "req/s p50_ms p99_ms non2xx"
run() {
  local ct=application/json extra=""
  if [ -n "${3:-}" ]; then ct=application/octet-stream; extra="wrk.headers[\"Inference-Header-Content-Length\"] = \"$3\""; fi
  cat >"$WORK/req.lua" <<LUA
local f = io.open("$2", "rb"); wrk.body = f:read("*a"); f:close()
wrk.method = "POST"; wrk.headers["Content-Type"] = "$ct"
$extra
LUA
  wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s "$WORK/req.lua" "$B$1" >"$WORK/wrk.txt"
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

printf '%-40s %10s %9s %9s %8s %6s\n' "case (784-30-10, $CONNS conns)" "req/s" "p50 ms" "p99 ms" "vs /v1" "non2xx"
read -r v1 p50 p99 bad < <(run /v1/models/n/predict "$WORK/one.v1.json")
printf '%-40s %10s %9s %9s %8s %6s\n' "/v1 predict, 1 row" "$v1" "$p50" "$p99" "100%" "$bad"
read -r rps p50 p99 bad < <(run /v2/models/n/infer "$WORK/one.v2.json")
printf '%-40s %10s %9s %9s %7.0f%% %6s\n' "/v2 infer JSON, 1 row" "$rps" "$p50" "$p99" "$(echo "100*$rps/$v1" | bc -l)" "$bad"
read -r rps p50 p99 bad < <(run /v2/models/n/infer "$WORK/one.v2.bin" "$(cat "$WORK/one.v2.len")")
printf '%-40s %10s %9s %9s %7.0f%% %6s\n' "/v2 infer binary, 1 row" "$rps" "$p50" "$p99" "$(echo "100*$rps/$v1" | bc -l)" "$bad"
read -r v1k p50 p99 bad < <(run /v1/models/n/predict "$WORK/thousand.v1.json")
printf '%-40s %10s %9s %9s %7.0f%% %6s   = %.0f rows/s\n' "/v1 predict, 1,000 rows" "$v1k" "$p50" "$p99" "100" "$bad" "$(echo "$v1k*1000" | bc -l)"
read -r json p50 p99 bad < <(run /v2/models/n/infer "$WORK/thousand.v2.json")
printf '%-40s %10s %9s %9s %7.0f%% %6s   = %.0f rows/s\n' "/v2 infer JSON, 1,000 rows" "$json" "$p50" "$p99" "$(echo "100*$json/$v1k" | bc -l)" "$bad" "$(echo "$json*1000" | bc -l)"
read -r bin p50 p99 bad < <(run /v2/models/n/infer "$WORK/thousand.v2.bin" "$(cat "$WORK/thousand.v2.len")")
printf '%-40s %10s %9s %9s %7.0f%% %6s   = %.0f rows/s\n' "/v2 infer binary, 1,000 rows" "$bin" "$p50" "$p99" "$(echo "100*$bin/$v1k" | bc -l)" "$bad" "$(echo "$bin*1000" | bc -l)"
printf 'binary / JSON on 1,000 rows: %.2fx\n' "$(echo "$bin/$json" | bc -l)"
