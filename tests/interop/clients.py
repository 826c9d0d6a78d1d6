"""Interop with clients nobody here wrote, against the live binary.

Usage: python tests/interop/clients.py <mlpd binary>

Starts mlpd on a free loopback port, trains four models through /v1 (iris: string labels;
digits: integer labels; diabetes: a regression with scaled targets; breast cancer: one sigmoid
unit), then:

* Open Inference Protocol (V2): tritonclient's HTTP client with its defaults (binary tensors)
  and with binary_data=False, KServe's InferenceRESTClient (protocol "v2", JSON and binary), and
  open-inference-openapi's client (which parses every response into the protocol's own schema)
  each check metadata, readiness, one-row and batch infer on a classifier and a regressor, the
  chosen outputs, an unknown model (404) and a malformed tensor (400), and that the answers
  equal /v1 predictions exactly (the same engine: no tolerance).
* ONNX: each model exported with ?format=onnx passes onnx.checker.check_model(full_check=True),
  and ONNX Runtime's outputs equal mlpd's predictions within 1e-5 relative (plus 1e-6 absolute
  for values near zero) on the whole dataset, labels identical.
* A real table (titanic: text columns, missing ages): its ONNX export run by ONNX Runtime from
  the raw columns, and tritonclient sending one tensor per feature, equal /v1 records.

Exits non-zero on the first failure; prints one line per check.
"""

import asyncio
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATASETS = os.path.join(HERE, "..", "..", "datasets")
RTOL, ATOL = 1e-5, 1e-6


def log(msg):
    print(f"ok  {msg}", flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, binary):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="mlpd-interop-")
        self.log = open(os.path.join(self.dir, "server.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "--bind", f"127.0.0.1:{self.port}", "--data-dir", os.path.join(self.dir, "data"),
             "--train-workers", "2", "--log-format", "json"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(200):
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit("mlpd did not start")

    def request(self, method, path, body=None, content_type="application/json"):
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("content-type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, body, content_type="application/json"):
        return self.request("POST", path, body, content_type)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def load_csv(name, target):
    with open(os.path.join(DATASETS, name)) as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    t = header.index(target)
    x = np.array([[float(v) for i, v in enumerate(r) if i != t] for r in rows], dtype=np.float32)
    return x, [r[t] for r in rows]


# name, csv, target, layers, training parameters
MODELS = [
    ("iris", "iris.csv", "species",
     [{"units": 16, "activation": "relu"}, {"units": 3, "activation": "softmax"}],
     {"epochs": 60, "learning_rate": 0.02, "batch_size": 16, "normalize": "standard"}),
    ("digits", "digits.csv", "digit",
     [{"units": 32, "activation": "tanh"}, {"units": 10, "activation": "softmax"}],
     {"epochs": 15, "learning_rate": 0.01, "batch_size": 32, "normalize": "minmax"}),
    ("diabetes", "diabetes.csv", "progression",
     [{"units": 16, "activation": "leaky_relu"}, {"units": 1, "activation": "identity"}],
     {"epochs": 60, "learning_rate": 0.01, "batch_size": 32, "normalize": "standard",
      "normalize_targets": True}),
    ("breast_cancer", "breast_cancer.csv", "diagnosis",
     [{"units": 8, "activation": "sigmoid"}, {"units": 1, "activation": "sigmoid"}],
     {"epochs": 40, "learning_rate": 0.01, "batch_size": 32, "normalize": "standard"}),
]


def train_all(srv):
    out = {}
    for name, file, target, layers, params in MODELS:
        x, _ = load_csv(file, target)
        st, body = srv.post("/v1/models", {"name": name, "inputs": x.shape[1], "layers": layers,
                                           "description": f"{name} for the interop check"})
        expect(st == 201, f"create {name}: {st} {body!r}")
        with open(os.path.join(DATASETS, file), "rb") as f:
            st, body = srv.post(f"/v1/datasets?target={target}", f.read(), "text/csv")
        expect(st == 201, f"upload {file}: {st} {body!r}")
        ds = json.loads(body)["id"]
        st, body = srv.post(f"/v1/models/{name}/train", {"dataset_id": ds, "seed": 7, **params})
        expect(st == 202, f"train {name}: {st} {body!r}")
        job = json.loads(body)["id"]
        for _ in range(1200):
            j = json.loads(srv.get(f"/v1/jobs/{job}")[1])
            if j["status"] in ("succeeded", "failed", "canceled"):
                break
            time.sleep(0.05)
        expect(j["status"] == "succeeded", f"training {name}: {j}")
        st, body = srv.post(f"/v1/models/{name}/predict", {"inputs": x.tolist()})
        expect(st == 200, f"predict {name}: {st} {body!r}")
        p = json.loads(body)
        out[name] = (x, np.array(p["outputs"], dtype=np.float32), p.get("labels"))
    log("trained iris, digits, diabetes (scaled targets), breast cancer (one sigmoid unit) via /v1")
    return out


def v1(srv, name, rows):
    """/v1 predict on exactly these rows (a forward pass of another batch size may sum in
    another order, so equality is only promised for the same rows)."""
    st, body = srv.post(f"/v1/models/{name}/predict", {"inputs": rows.tolist()})
    expect(st == 200, f"predict {name}: {st} {body!r}")
    p = json.loads(body)
    return np.array(p["outputs"], dtype=np.float32), p.get("labels")


def same_labels(got, want):
    return [str(v.decode() if isinstance(v, bytes) else v) for v in np.asarray(got).ravel()] == \
        [str(v) for v in want]


def check_triton(srv, models):
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    c = th.InferenceServerClient(url=f"127.0.0.1:{srv.port}")
    expect(c.is_server_live() and c.is_server_ready(), "triton: server live and ready")
    meta = c.get_server_metadata()
    expect(meta["name"] == "mlpd" and "binary_tensor_data" in meta["extensions"], f"server metadata {meta}")
    for name in ("iris", "diabetes"):
        x, outputs, labels = models[name]
        expect(c.is_model_ready(name) and c.is_model_ready(name, "1"), f"triton: {name} ready")
        m = c.get_model_metadata(name)
        expect(m["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, x.shape[1]]}], f"metadata {m}")
        want_out = ["outputs", "label"] if labels else ["outputs"]
        expect([o["name"] for o in m["outputs"]] == want_out, f"metadata outputs {m}")
        expect(c.get_model_metadata(name, "1")["versions"] == ["1"], "versioned metadata")
        for binary in (True, False):
            for rows in (x[:1], x[:50]):
                inp = th.InferInput("input", list(rows.shape), "FP32")
                inp.set_data_from_numpy(rows, binary_data=binary)
                if binary:
                    r = c.infer(name, [inp], request_id="r1")  # tritonclient's defaults
                else:
                    outs = [th.InferRequestedOutput("outputs", binary_data=False)]
                    if labels:
                        outs.append(th.InferRequestedOutput("label", binary_data=False))
                    r = c.infer(name, [inp], outputs=outs, request_id="r1")
                expect(r.get_response()["id"] == "r1", "id echoed")
                got = r.as_numpy("outputs")
                want, want_labels = v1(srv, name, rows)
                expect(got.dtype == np.float32 and np.array_equal(got, want),
                       f"triton {name} binary={binary}: outputs differ from /v1")
                if labels:
                    expect(same_labels(r.as_numpy("label"), want_labels), f"triton {name}: labels")
        if labels:
            inp = th.InferInput("input", [3, x.shape[1]], "FP32")
            inp.set_data_from_numpy(x[:3])
            r = c.infer(name, [inp], outputs=[th.InferRequestedOutput("label")])
            expect(r.as_numpy("outputs") is None and same_labels(r.as_numpy("label"), v1(srv, name, x[:3])[1]),
                   "triton: only the chosen output")
    for call, status in ((lambda: c.get_model_metadata("no_such_model"), "404"),
                         (lambda: c.infer("no_such_model", [_one(th, 4)]), "404"),
                         (lambda: c.infer("iris", [_one(th, 3)]), "400")):
        try:
            call()
            raise AssertionError("triton: an error was expected")
        except InferenceServerException as e:
            expect(str(e.status()) == status, f"triton: status {e.status()} ({e}), want {status}")
    log("tritonclient[http]: metadata, readiness, one-row and batch infer (binary default and "
        "binary_data=False), chosen outputs, 404, 400; equal to /v1")


def _one(th, width):
    inp = th.InferInput("input", [1, width], "FP32")
    inp.set_data_from_numpy(np.ones((1, width), dtype=np.float32))
    return inp


async def check_kserve(srv, models):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    c = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    try:
        expect(await c.is_server_live(srv.base), "kserve: live")
        expect(await c.is_server_ready(srv.base), "kserve: ready")
        for name in ("iris", "diabetes"):
            x, outputs, labels = models[name]
            expect(await c.is_model_ready(srv.base, name), f"kserve: {name} ready")
            for binary in (False, True):
                for rows in (x[:1], x[:40]):
                    inp = InferInput("input", list(rows.shape), "FP32")
                    inp.set_data_from_numpy(rows, binary_data=binary)
                    req = InferRequest(model_name=name, infer_inputs=[inp], request_id="k1")
                    res = await c.infer(srv.base, req, model_name=name)
                    expect(res.id == "k1", "kserve: id echoed")
                    by_name = {o.name: o for o in res.outputs}
                    got = by_name["outputs"].as_numpy()
                    want, want_labels = v1(srv, name, rows)
                    expect(np.array_equal(got.astype(np.float32), want),
                           f"kserve {name} binary={binary}: outputs differ from /v1")
                    if labels:
                        expect(same_labels(by_name["label"].as_numpy(), want_labels),
                               f"kserve {name}: labels")
        for model, width, status in (("no_such_model", 4, 404), ("iris", 3, 400)):
            inp = InferInput("input", [1, width], "FP32", data=[1.0] * width)
            try:
                await c.infer(srv.base, InferRequest(model_name=model, infer_inputs=[inp]), model_name=model)
                raise AssertionError("kserve: an error was expected")
            except Exception as e:  # httpx.HTTPStatusError
                got = getattr(getattr(e, "response", None), "status_code", None)
                expect(got == status, f"kserve: {e!r}, want {status}")
    finally:
        await c.close()
    log("kserve InferenceRESTClient (v2): readiness, one-row and batch infer (JSON and binary), 404, 400; equal to /v1")


def check_open_inference(srv, models):
    from open_inference.openapi import InferenceRequest, RequestInput, RequestOutput
    from open_inference.openapi.client import OpenInferenceClient
    from open_inference.openapi.core.api_error import ApiError

    c = OpenInferenceClient(base_url=srv.base)
    c.check_server_liveness()
    c.check_server_readiness()
    meta = c.read_server_metadata()
    expect(meta.name == "mlpd", f"open-inference: {meta}")
    for name in ("iris", "diabetes"):
        x, outputs, labels = models[name]
        c.check_model_readiness(name)
        c.check_model_version_readiness(name, "1")
        m = c.read_model_metadata(name)
        expect(m.inputs[0].shape == [-1, x.shape[1]] and m.versions == ["1"], f"open-inference: {m}")
        m = c.read_model_version_metadata(name, "1")
        for rows in (x[:1], x[:30]):
            for nested in (False, True):
                data = rows.tolist() if nested else rows.ravel().tolist()
                req = InferenceRequest(id="o1", inputs=[RequestInput(name="input", shape=list(rows.shape),
                                                                     datatype="FP32", data=data)])
                res = c.model_infer(name, request=req)
                expect(res.id == "o1" and res.model_name == name, f"open-inference: {res}")
                by_name = {o.name: o for o in res.outputs}
                got = np.array(by_name["outputs"].data.dict()["__root__"], dtype=np.float32)
                want, want_labels = v1(srv, name, rows)
                expect(np.array_equal(got.reshape(rows.shape[0], -1), want),
                       f"open-inference {name}: outputs differ from /v1")
                if labels:
                    expect(same_labels(by_name["label"].data.dict()["__root__"], want_labels),
                           f"open-inference {name}: labels")
        if labels:
            req = InferenceRequest(inputs=[RequestInput(name="input", shape=[1, x.shape[1]], datatype="FP64",
                                                        data=x[0].tolist())],
                                   outputs=[RequestOutput(name="label")])
            res = c.model_version_infer(name, "1", request=req)
            expect([o.name for o in res.outputs] == ["label"], "open-inference: chosen output")
    for call, status in ((lambda: c.read_model_metadata("no_such_model"), 404),
                         (lambda: c.model_infer("iris", request=InferenceRequest(inputs=[RequestInput(
                             name="input", shape=[1, 4], datatype="FP32", data=[1.0, 2.0])])), 400)):
        try:
            call()
            raise AssertionError("open-inference: an error was expected")
        except ApiError as e:
            expect(e.status_code == status, f"open-inference: {e}, want {status}")
    log("open-inference-openapi: every response parsed into the protocol's schema; metadata, readiness, "
        "flat and nested infer, chosen outputs, 404, 400; equal to /v1")


def check_onnx(srv, models):
    import onnx
    import onnxruntime as ort

    for name, (x, outputs, labels) in models.items():
        st, body = srv.get(f"/v1/models/{name}/versions/1/export?format=onnx")
        expect(st == 200, f"export {name}: {st}")
        m = onnx.load_from_string(body)
        onnx.checker.check_model(m, full_check=True)
        meta = {p.key: p.value for p in m.metadata_props}
        expect(meta.get("description") == f"{name} for the interop check", f"onnx metadata {meta}")
        s = ort.InferenceSession(body, providers=["CPUExecutionProvider"])
        names = [o.name for o in s.get_outputs()]
        got = s.run(None, {"input": x})
        res = dict(zip(names, got))
        diff = np.abs(res["outputs"] - outputs)
        ok = np.allclose(res["outputs"], outputs, rtol=RTOL, atol=ATOL)
        worst = float(np.max(diff / (np.abs(outputs) + ATOL / RTOL)))
        rel = float(np.max(diff / np.maximum(np.abs(outputs), 1e-30)))
        expect(ok, f"onnx {name}: outputs differ from mlpd (worst scaled error {worst})")
        if labels:
            expect(same_labels(res["label"], labels), f"onnx {name}: labels differ")
            kind = "int64" if res["label"].dtype == np.int64 else "string"
        else:
            expect(names == ["outputs"], f"onnx {name}: outputs {names}")
            kind = "no"
        log(f"onnx {name}: checker (full_check) passes; onnxruntime equals mlpd on {len(x)} rows "
            f"(max |Δ|/(|y|+0.1) = {worst:.1e}, max |Δ|/|y| = {rel:.1e}); "
            + ("no labels (regression)" if kind == "no" else f"{kind} labels identical"))


def check_tables(srv):
    """A model of a real table (titanic: text columns, empty ages, a name column ignored):
    ONNX Runtime runs its export from the raw columns (strings, NaN for a missing age), and
    tritonclient sends each feature as its own tensor (BYTES for text); both equal /v1
    predictions by records."""
    import onnx
    import onnxruntime as ort
    import tritonclient.http as th

    with open(os.path.join(DATASETS, "titanic.csv")) as f:
        rows = list(csv.DictReader(f))
    st, body = srv.post("/v1/models", {"name": "titanic", "description": "titanic for the interop check",
                                       "layers": [{"units": 16, "activation": "relu"},
                                                  {"units": 2, "activation": "softmax"}]})
    expect(st == 201, f"create titanic: {st} {body!r}")
    with open(os.path.join(DATASETS, "titanic.csv"), "rb") as f:
        st, body = srv.post("/v1/datasets?target=survived&ignore=name", f.read(), "text/csv")
    expect(st == 201, f"upload titanic: {st} {body!r}")
    ds = json.loads(body)["id"]
    st, body = srv.post("/v1/models/titanic/train", {
        "dataset_id": ds, "seed": 7, "epochs": 20, "learning_rate": 0.01, "batch_size": 32,
        "preprocessing": {"impute": "median", "missing_indicator": True, "min_frequency": 1}})
    expect(st == 202, f"train titanic: {st} {body!r}")
    job = json.loads(body)["id"]
    for _ in range(1200):
        j = json.loads(srv.get(f"/v1/jobs/{job}")[1])
        if j["status"] in ("succeeded", "failed", "canceled"):
            break
        time.sleep(0.05)
    expect(j["status"] == "succeeded", f"training titanic: {j}")
    records = [{"sex": r["sex"], "age": float(r["age"]) if r["age"] else None, "class": r["class"]}
               for r in rows]
    st, body = srv.post("/v1/models/titanic/predict", {"records": records})
    expect(st == 200, f"predict titanic: {st} {body!r}")
    p = json.loads(body)
    want, want_labels = np.array(p["outputs"], dtype=np.float32), p["labels"]
    n = len(rows)
    sex = np.array([[r["sex"]] for r in rows], dtype=object)
    cls = np.array([[r["class"]] for r in rows], dtype=object)
    age = np.array([[float(r["age"]) if r["age"] else np.nan] for r in rows], dtype=np.float32)

    st, body = srv.get("/v1/models/titanic/versions/1/export?format=onnx")
    expect(st == 200, f"export titanic: {st} {body[:200]!r}")
    m = onnx.load_from_string(body)
    onnx.checker.check_model(m, full_check=True)
    meta = {e.key: e.value for e in m.metadata_props}
    expect(json.loads(meta["features"]) == ["sex", "age", "class"], f"onnx titanic metadata {meta}")
    expect(meta.get("description") == "titanic for the interop check", f"onnx titanic metadata {meta}")
    s = ort.InferenceSession(body, providers=["CPUExecutionProvider"])
    expect([i.name for i in s.get_inputs()] == ["sex", "age", "class"], "onnx titanic inputs")
    res = dict(zip([o.name for o in s.get_outputs()], s.run(None, {"sex": sex, "age": age, "class": cls})))
    worst = float(np.max(np.abs(res["outputs"] - want) / (np.abs(want) + ATOL / RTOL)))
    expect(np.allclose(res["outputs"], want, rtol=RTOL, atol=ATOL),
           f"onnx titanic: outputs differ from mlpd (worst scaled error {worst})")
    expect(same_labels(res["label"], want_labels), "onnx titanic: labels differ")
    log(f"onnx titanic (categorical, missing ages, indicator): checker passes; onnxruntime from raw "
        f"strings and NaN equals mlpd on {n} rows (max |Δ|/(|y|+0.1) = {worst:.1e}); labels identical")

    c = th.InferenceServerClient(url=f"127.0.0.1:{srv.port}")
    md = c.get_model_metadata("titanic")
    expect([(i["name"], i["datatype"]) for i in md["inputs"]] ==
           [("sex", "BYTES"), ("age", "FP32"), ("class", "BYTES")], f"triton titanic metadata {md}")
    for binary in (True, False):
        inputs = []
        for name, arr, dt in (("sex", sex, "BYTES"), ("age", age, "FP32"), ("class", cls, "BYTES")):
            if not binary and name == "age":
                arr = np.nan_to_num(arr, nan=30.0)  # JSON has no NaN: a known age instead
            t = th.InferInput(name, list(arr.shape), dt)
            t.set_data_from_numpy(arr, binary_data=binary)
            inputs.append(t)
        r = c.infer("titanic", inputs, outputs=[th.InferRequestedOutput("outputs", binary_data=binary),
                                                th.InferRequestedOutput("label", binary_data=binary)])
        if binary:
            expect(np.array_equal(r.as_numpy("outputs"), want), "triton titanic: outputs differ from /v1")
            expect(same_labels(r.as_numpy("label"), want_labels), "triton titanic: labels")
        else:
            alt = [dict(rec, age=30.0 if rec["age"] is None else rec["age"]) for rec in records]
            st, body = srv.post("/v1/models/titanic/predict", {"records": alt})
            expect(np.array_equal(r.as_numpy("outputs"), np.array(json.loads(body)["outputs"], dtype=np.float32)),
                   "triton titanic (JSON): outputs differ from /v1")
    log(f"tritonclient titanic: metadata lists the features (BYTES for text); one tensor per feature, "
        f"binary (NaN = missing) and JSON, {n} rows equal /v1 records")


def main():
    srv = Server(sys.argv[1])
    try:
        models = train_all(srv)
        check_triton(srv, models)
        asyncio.run(check_kserve(srv, models))
        check_open_inference(srv, models)
        check_onnx(srv, models)
        check_tables(srv)
    except Exception:
        srv.stop()
        with open(os.path.join(srv.dir, "server.log")) as f:
            tail = f.readlines()[-20:]
        print("server log (tail):\n" + "".join(tail), file=sys.stderr)
        raise
    srv.stop()
    print("interop: all checks passed")


if __name__ == "__main__":
    main()
