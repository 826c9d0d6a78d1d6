#!/usr/bin/env bash
# Training throughput of mlpd beside NumPy and PyTorch, interleaved in one session so that the
# machine's load hits all three alike: each config at 1 and 2 threads, ROUNDS rounds, medians.
#
#   PY=V/bin/python bench/compare.sh          # V: a venv with numpy threadpoolctl torch
#   CONFIGS="W B" ROUNDS=3 EPOCHS=3 PY=V/bin/python bench/compare.sh
#
# Prints one line per (config, threads, impl) with the median samples/s, then mlpd's ratio to
# the best peer at the same thread count and its own 2-thread / 1-thread scaling. Each 2-thread
# run is tagged with the cores' round trip measured just before and after it (`train --probe`):
# `near` when both are under NEAR_NS, `far` when both are over, else `mixed`. A VM's two cores
# may be moved apart and back every few seconds, and 2-thread figures of every implementation
# drop when they are apart, so the 2-thread medians are also given per tag.
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
. bench/cores.sh
train_bench "$BIN"
median() { sed 's/.*median \([0-9,]*\) samples.*/\1/' | tr -d ,; }
for r in $(seq "$ROUNDS"); do
  for c in $CONFIGS; do
    for t in 1 2; do
      for impl in $IMPLS; do
        [ "$t" = 1 ] || before=$(trip)
        case $impl in
          mlpd) v=$("$BIN" --bench --config "$c" --threads "$t" --epochs "$EPOCHS" | tail -1 | median) ;;
          *) v=$("$PY" bench/baseline.py --impl "$impl" --config "$c" --threads "$t" --epochs "$EPOCHS" | tail -1 | median) ;;
        esac
        where=-
        [ "$t" = 1 ] || where="$(place "$before" "$(trip)") ${before:-?}"
        echo "$c $t $impl $v $where" | tee -a "$OUT" >&2
      done
    done
  done
done
"$PY" - "$OUT" <<'PY'
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
placed = defaultdict(list)
for line in open(sys.argv[1]):
    c, t, impl, v, where, *_ = line.split()
    runs[(c, int(t), impl)].append(float(v))
    placed[(c, where, impl)].append(float(v))
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
    for where in ("near", "far", "mixed", "unknown"):
        group = {i: statistics.median(v) for (cc, w, i), v in placed.items() if cc == c and w == where}
        if not group:
            continue
        n = max(len(v) for (cc, w, _), v in placed.items() if cc == c and w == where)
        line = ", ".join(f"{i} {v:,.0f}" for i, v in sorted(group.items()))
        scaling = ""
        if "mlpd" in group and (c, 1, "mlpd") in med:
            scaling = f"; mlpd / its 1 thread = {group['mlpd'] / med[(c, 1, 'mlpd')]:.2f}x"
        peers = {i: v for i, v in group.items() if i != "mlpd"}
        if "mlpd" in group and peers:
            best = max(peers, key=peers.get)
            scaling += f", / best peer ({best}) = {group['mlpd'] / peers[best]:.2f}x"
        print(f"{c} 2 threads, cores {where} (up to {n} runs each): {line}{scaling}")
PY
