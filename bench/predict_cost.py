#!/usr/bin/env python3
"""CPU instructions per one-row predict, counted by callgrind inside the server, for several
mlpd binaries in one run. Instruction counts do not depend on what else the machine is doing,
so this compares builds reliably on a busy or noisy machine (bench/predict_vs.sh gives req/s).

    python3 bench/predict_cost.py target/release/mlpd OTHER/mlpd [--requests 2000] [--models n,ceiling]

Each binary serves the models bench/predict.sh loads, trained by the same requests: `n`
(784-30-10 sigmoid classifier), `ceiling` (784→1 identity: the same request body, next to no
compute) and `w` (784-256-128-10 relu/softmax). For each model in turn the count is switched on
(callgrind_control -i on), covers REQUESTS sequential predicts on one kept-alive connection, is
switched off and dumped, and is divided by REQUESTS. Prints instructions per request for each
binary and model, each model's ratio to the first binary, and, with the ceiling measured, each
model's share of it (the ceiling's instructions over the model's: the share of the ceiling's
throughput the model would reach if the server were bound by instructions alone; predict.sh
measures the real one under wrk).
"""
import argparse
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

PORT = 18311


def call(conn, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"} if data is not None else {}
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    out = resp.read()
    if resp.status >= 300:
        raise RuntimeError(f"{method} {path}: {resp.status} {out[:200]!r}")
    return json.loads(out) if out else None


MODELS = {
    "n": [{"units": 30, "activation": "sigmoid"}, {"units": 10, "activation": "sigmoid"}],
    "ceiling": [{"units": 1, "activation": "identity"}],
    "w": [{"units": 256, "activation": "relu"}, {"units": 128, "activation": "relu"},
          {"units": 10, "activation": "softmax"}],
}


def control(server, *args):
    subprocess.run(["callgrind_control", *args, str(server.pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(binary, requests, models, work):
    """Instructions per request for each of `models` on `binary`."""
    data = os.path.join(work, "data-" + str(abs(hash(binary))))
    out = os.path.join(work, "callgrind.out")
    env = dict(os.environ, MLPD_DATA_DIR=data, MLPD_BIND=f"127.0.0.1:{PORT}",
               MLPD_TRAIN_WORKERS="1", RUST_LOG="error")
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conn = None
        for _ in range(600):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
                call(conn, "GET", "/health")
                break
            except OSError:
                conn = None
                time.sleep(0.1)
        if conn is None:
            raise RuntimeError(f"{binary} did not start")
        random.seed(0)
        row = lambda: [round(random.random(), 4) for _ in range(784)]
        rows = [row() for _ in range(256)]
        body = {"inputs": [row()]}
        for name in models:
            call(conn, "POST", "/v1/models", {"name": name, "inputs": 784, "layers": MODELS[name]})
            if name == "ceiling":
                dataset = {"inputs": rows, "targets": [[sum(r) / 784] for r in rows]}
            else:
                dataset = {"inputs": rows, "labels": [i % 10 for i in range(256)]}
            job = call(conn, "POST", f"/v1/models/{name}/train",
                       {"dataset": dataset, "epochs": 1, "seed": 1})["id"]
            while call(conn, "GET", f"/v1/jobs/{job}")["status"] != "succeeded":
                time.sleep(0.2)
            for _ in range(50):  # warm: allocator, batcher, caches
                call(conn, "POST", f"/v1/models/{name}/predict", body)
        for name in models:
            control(server, "-i", "on")
            for _ in range(requests):
                call(conn, "POST", f"/v1/models/{name}/predict", body)
            control(server, "-i", "off")
            control(server, "-d", name)
    finally:
        server.terminate()
        server.wait()
    # One dump per model, in order (out.1, out.2, …), then the final one at exit.
    parts = sorted((int(n.rsplit(".", 1)[1]), n) for n in os.listdir(work)
                   if re.fullmatch(r"callgrind\.out\.\d+", n))
    costs = {}
    for (_, name), model in zip(parts, models):
        with open(os.path.join(work, name)) as f:
            costs[model] = next(int(m.group(1)) for m in map(re.compile(r"totals:\s+(\d+)").match, f) if m)
    for name in os.listdir(work):
        if name.startswith("callgrind.out"):
            os.remove(os.path.join(work, name))
    shutil.rmtree(data, ignore_errors=True)
    return {m: c / requests for m, c in costs.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--models", default="n,ceiling",
                    help="comma-separated, of: " + ", ".join(MODELS))
    args = ap.parse_args()
    models = args.models.split(",")
    if not shutil.which("valgrind"):
        sys.exit("needs valgrind (apt-get install valgrind)")
    if any(m not in MODELS for m in models):
        sys.exit(f"--models takes {', '.join(MODELS)}")
    with tempfile.TemporaryDirectory() as work:
        costs = [measure(b, args.requests, models, work) for b in args.binaries]
    print(f"instructions per one-row predict ({args.requests} requests each, callgrind)")
    for m in models:
        print(f"{m}:")
        for b, c in zip(args.binaries, costs):
            share = ""
            if "ceiling" in c and m != "ceiling":
                share = f"  {100 * c['ceiling'] / c[m]:5.1f}% of the ceiling"
            print(f"  {c[m]:12,.0f}  {c[m] / costs[0][m]:6.3f}x{share}  {b}")


if __name__ == "__main__":
    main()
