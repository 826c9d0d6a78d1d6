#!/usr/bin/env bash
# Training throughput of mlpd beside NumPy and PyTorch, interleaved in one session so that the
# machine's load hits all three alike: each config at 1 and 2 threads, ROUNDS rounds, medians.
#
#   PY=V/bin/python bench/compare.sh          # V: a venv with numpy threadpoolctl torch
#   CONFIGS="W B" ROUNDS=3 EPOCHS=3 PY=V/bin/python bench/compare.sh
#
# Prints one line per (config, threads, impl) with the median samples/s, then mlpd's ratio to
# the best peer at the same thread count and its own 2-thread / 1-thread scaling.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
CONFIGS=${CONFIGS:-"N W B"}
ROUNDS=${ROUNDS:-2}
EPOCHS=${EPOCHS:-3}
IMPLS=${IMPLS:-"mlpd numpy torch"}
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
OUT=$(mktemp)
BIN=$(mktemp)
trap 'rm -f "$OUT" "$BIN"' EXIT
# Build once and run a copy, so that editing or rebuilding the tree while this runs changes
# nothing it measures.
built=$(cargo bench --bench train --no-run --quiet --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "train":
        print(m["executable"])')
install -m 755 "$built" "$BIN"
median() { sed 's/.*median \([0-9,]*\) samples.*/\1/' | tr -d ,; }
for r in $(seq "$ROUNDS"); do
  for c in $CONFIGS; do
    for t in 1 2; do
      for impl in $IMPLS; do
        case $impl in
          mlpd) v=$("$BIN" --bench --config "$c" --threads "$t" --epochs "$EPOCHS" | tail -1 | median) ;;
          *) v=$("$PY" bench/baseline.py --impl "$impl" --config "$c" --threads "$t" --epochs "$EPOCHS" | tail -1 | median) ;;
        esac
        echo "$c $t $impl $v" | tee -a "$OUT" >&2
      done
    done
  done
done
"$PY" - "$OUT" <<'PY'
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    c, t, impl, v = line.split()
    runs[(c, int(t), impl)].append(float(v))
med = {k: statistics.median(v) for k, v in runs.items()}
print(f"{'config':6} {'threads':>7} {'impl':>6} {'samples/s':>10}  (median of {max(len(v) for v in runs.values())})")
for (c, t, impl), v in sorted(med.items()):
    print(f"{c:6} {t:>7} {impl:>6} {v:>10,.0f}")
for c in sorted({k[0] for k in med}):
    for t in (1, 2):
        m = med.get((c, t, "mlpd"))
        peers = {i: v for (cc, tt, i), v in med.items() if cc == c and tt == t and i != "mlpd"}
        if m and peers:
            best = max(peers, key=peers.get)
            print(f"{c} {t} thread(s): mlpd / best peer ({best}) = {m / peers[best]:.2f}x")
    if (c, 1, "mlpd") in med and (c, 2, "mlpd") in med:
        print(f"{c}: mlpd 2 threads / 1 thread = {med[(c, 2, 'mlpd')] / med[(c, 1, 'mlpd')]:.2f}x")
PY
