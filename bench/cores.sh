# Sourced by the benchmarks: where the machine has put its two cores.
#
#   . bench/cores.sh; train_bench "$BIN"    # builds `cargo bench --bench train`, copies it to $BIN
#   trip                                   # the cores' round trip in ns (`train --probe`), or nothing
#   place BEFORE AFTER                     # near, far, mixed or unknown
#
# A VM's two cores may sit next to each other (a cache line goes there and back in ≈ 50–100 ns)
# or far apart (≈ 350–450 ns: another CCD or socket), and the hypervisor moves them every few
# seconds; whatever the two threads of one process exchange costs more when they are far.
NEAR_NS=${NEAR_NS:-150}

# Builds the train bench once and copies it to $1, so that editing or rebuilding the tree while a
# benchmark runs changes nothing it measures.
train_bench() {
  local built
  built=$(cargo bench --bench train --no-run --quiet --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "train":
        print(m["executable"])')
  install -m 755 "$built" "$1"
  CORES_BIN=$1
}

trip() { "$CORES_BIN" --probe | sed -n 's/^core-to-core round trip: \([0-9]*\) ns$/\1/p'; }

# near, far or mixed, from the round trips before ($1) and after ($2) a run (unknown without
# both: one core, or a failed probe).
place() {
  if ! [[ "$1" =~ ^[0-9]+$ && "$2" =~ ^[0-9]+$ ]]; then echo unknown
  elif [ "$1" -lt "$NEAR_NS" ] && [ "$2" -lt "$NEAR_NS" ]; then echo near
  elif [ "$1" -ge "$NEAR_NS" ] && [ "$2" -ge "$NEAR_NS" ]; then echo far
  else echo mixed; fi
}
