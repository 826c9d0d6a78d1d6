#!/usr/bin/env python3
"""CPU instructions per one-row predict, counted by callgrind inside the server, for several
mlpd binaries in one run. Instruction counts do not depend on what else the machine is doing,
so this compares builds reliably on a busy or noisy machine (bench/predict_vs.sh gives req/s).

    python3 bench/predict_cost.py target/release/mlpd OTHER/mlpd [--requests 2000]

Each binary serves the same 784-30-10 sigmoid classifier (trained by the same request); the
count is switched on after training (callgrind_control -i on), covers REQUESTS sequential
predicts on one kept-alive connection, and is divided by REQUESTS. Prints instructions per
request for each binary and each one's ratio to the first.
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


def measure(binary, requests, work):
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
        call(conn, "POST", "/v1/models", {"name": "n", "inputs": 784, "layers": [
            {"units": 30, "activation": "sigmoid"}, {"units": 10, "activation": "sigmoid"}]})
        job = call(conn, "POST", "/v1/models/n/train", {
            "dataset": {"inputs": rows, "labels": [i % 10 for i in range(256)]},
            "epochs": 1, "seed": 1})["id"]
        while call(conn, "GET", f"/v1/jobs/{job}")["status"] != "succeeded":
            time.sleep(0.2)
        body = {"inputs": [row()]}
        for _ in range(50):  # warm: allocator, batcher thread, caches
            call(conn, "POST", "/v1/models/n/predict", body)
        subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(requests):
            call(conn, "POST", "/v1/models/n/predict", body)
        subprocess.run(["callgrind_control", "-i", "off", str(server.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        server.terminate()
        server.wait()
    total = 0
    for name in os.listdir(work):
        if name.startswith("callgrind.out"):
            path = os.path.join(work, name)
            with open(path) as f:
                for line in f:
                    m = re.match(r"totals:\s+(\d+)", line)
                    if m:
                        total += int(m.group(1))
                        break
            os.remove(path)
    shutil.rmtree(data, ignore_errors=True)
    return total / requests


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("needs valgrind (apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as work:
        costs = [measure(b, args.requests, work) for b in args.binaries]
    print(f"instructions per one-row predict (784-30-10, {args.requests} requests, callgrind)")
    for b, c in zip(args.binaries, costs):
        print(f"  {c:12,.0f}  {c / costs[0]:6.3f}x  {b}")


if __name__ == "__main__":
    main()
