// The mlpd dashboard: plain JavaScript against the public API, nothing loaded from elsewhere.
"use strict";

const state = {
  token: "",            // kept in memory only: gone when the page closes
  models: [],
  datasets: [],
  jobs: [],
  following: null,      // {id, points: Map(epoch -> report), epochs, done, controller}
  recordKey: "",        // "model@version" whose features the record form shows
};

const $ = (sel) => document.querySelector(sel);

// ---- API ------------------------------------------------------------------------------------

class ApiError extends Error {}

/** Calls the API; throws ApiError with a sentence for people on any failure. */
async function api(method, path, body, contentType = "application/json") {
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = contentType;
    payload = contentType === "application/json" ? JSON.stringify(body) : body;
  }
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: payload });
  } catch (_) {
    throw new ApiError("The server could not be reached. Is it running?");
  }
  const text = await resp.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  if (!resp.ok) throw new ApiError(explain(resp.status, json));
  return json;
}

function explain(status, json) {
  const err = json && json.error;
  if (status === 401) return "This server needs an API token: enter it at the top of the page.";
  if (status === 403) return "Your token is not allowed to do this (it needs the admin role).";
  if (!err) return `The server answered ${status}.`;
  // Messages may start with the field they are about; say it once, at the end.
  const message = err.field && err.message.startsWith(`${err.field}: `)
    ? err.message.slice(err.field.length + 2)
    : err.message;
  const where = err.field && err.field !== "body" ? ` (${err.field})` : "";
  return `${capitalize(message)}${where}.`.replace(/\.\.$/, ".");
}

const capitalize = (s) => s.charAt(0).toUpperCase() + s.slice(1);

function notify(message, ok = false) {
  const n = $("#notice");
  n.textContent = message;
  n.className = ok ? "ok" : "";
  n.hidden = false;
}

function clearNotice() {
  $("#notice").hidden = true;
}

/** Runs an action from a form: shows what went wrong in plain words. */
async function attempt(action) {
  clearNotice();
  try {
    await action();
  } catch (e) {
    notify(e instanceof ApiError ? e.message : `Something went wrong: ${e.message}`);
  }
}

// ---- Tables ---------------------------------------------------------------------------------

function cell(tr, content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content); else td.textContent = content ?? "";
  tr.append(td);
  return td;
}

function fmt(x, digits = 4) {
  return typeof x === "number" ? x.toPrecision(digits) : "–";
}

function datasetName(d) {
  return d.name || d.id.slice(0, 8);
}

function renderModels() {
  const body = $("#models tbody");
  body.replaceChildren();
  for (const m of state.models) {
    const tr = document.createElement("tr");
    cell(tr, m.name);
    cell(tr, [m.inputs ?? "auto", ...m.layers.map((l) => `${l.units} ${l.activation}`)].join(" → "));
    cell(tr, m.versions.length ? m.versions.map((v) => `v${v}`).join(", ") : "not trained");
    const mt = m.latest_metrics;
    cell(tr, mt ? `${fmt(mt.cost)}${mt.val_cost !== undefined ? ` (val ${fmt(mt.val_cost)})` : ""}` : "–");
    cell(tr, mt && mt.accuracy !== undefined
      ? `${(mt.accuracy * 100).toFixed(1)}%${mt.val_accuracy !== undefined ? ` (val ${(mt.val_accuracy * 100).toFixed(1)}%)` : ""}`
      : "–");
    body.append(tr);
  }
  fillSelect($("#predict-model"), state.models.filter((m) => m.versions.length),
    (m) => [m.name, `${m.name} (v${m.latest_version}, ${m.inputs ?? "?"} inputs)`], "no trained model yet");
  loadRecordForm().catch((e) => notify(e.message));
}

/** A dataset's columns as the server read them: type, missing cells, levels or range. */
function renderDatasetColumns(d) {
  const body = $("#dataset-columns tbody");
  body.replaceChildren();
  for (const c of d.columns) {
    const tr = document.createElement("tr");
    cell(tr, c.target ? `${c.name} (target)` : c.name);
    cell(tr, c.type);
    cell(tr, String(c.missing));
    cell(tr, c.type === "categorical"
      ? `${c.levels} level${c.levels === 1 ? "" : "s"}: ${c.top.map((t) => t.value).join(", ")}${c.levels > c.top.length ? ", …" : ""}`
      : c.min !== undefined ? `${fmt(c.min)} to ${fmt(c.max)}` : "–");
    body.append(tr);
  }
  const ignored = d.ignored && d.ignored.length ? ` (ignored: ${d.ignored.join(", ")})` : "";
  $("#dataset-columns-caption").textContent = `Columns of ${datasetName(d)} as stored${ignored}`;
  $("#dataset-columns-wrap").hidden = false;
}

/** The predict form's record fields: one per feature of the chosen model's latest version
 *  (a dropdown of its levels for a categorical feature). */
async function loadRecordForm() {
  const name = $("#predict-model").value;
  const m = state.models.find((x) => x.name === name);
  const key = m && m.latest_version ? `${name}@${m.latest_version}` : "";
  if (key === state.recordKey) return;
  state.recordKey = key;
  $("#record-fields").replaceChildren();
  $("#record-fieldset").hidden = true;
  if (!key) return;
  const v = await api("GET", `/v1/models/${encodeURIComponent(name)}/versions/${m.latest_version}`);
  if (state.recordKey !== key || !v.signature) return;
  const box = $("#record-fields");
  v.signature.features.forEach(({ feature }, i) => {
    const span = document.createElement("span");
    const label = document.createElement("label");
    label.htmlFor = `record-${i}`;
    label.textContent = feature.name;
    let input;
    if (feature.type === "categorical") {
      input = document.createElement("select");
      input.append(new Option("(missing)", ""));
      for (const l of [...feature.levels, ...(feature.infrequent || [])].sort()) input.append(new Option(l, l));
    } else {
      input = document.createElement("input");
      input.type = "number";
      input.step = "any";
      input.placeholder = `empty: ${fmt(feature.impute)}`;
    }
    input.id = `record-${i}`;
    input.dataset.feature = feature.name;
    input.dataset.kind = feature.type;
    span.append(label, input);
    box.append(span);
  });
  $("#record-fieldset").hidden = false;
}

/** The record the form holds: numbers, levels, and null for an empty field (imputed). */
function formRecord() {
  const record = {};
  let given = 0;
  for (const el of $("#record-fields").querySelectorAll("[data-feature]")) {
    const text = el.value.trim();
    const name = el.dataset.feature;
    if (text === "") {
      record[name] = null;
    } else if (el.dataset.kind === "numeric") {
      const x = Number(text);
      if (!Number.isFinite(x)) throw new ApiError(`“${name}” must be a number.`);
      record[name] = x;
      given++;
    } else {
      record[name] = text;
      given++;
    }
  }
  if (!given) throw new ApiError("Fill in at least one feature.");
  return record;
}

function renderDatasets() {
  const body = $("#datasets tbody");
  body.replaceChildren();
  for (const d of state.datasets) {
    const tr = document.createElement("tr");
    cell(tr, datasetName(d));
    cell(tr, d.rows);
    cell(tr, d.input_width);
    cell(tr, d.classes ? `${d.classes.values.length} classes: ${d.classes.values.join(", ")}` : `${d.target_width} values`);
    body.append(tr);
  }
  fillSelect($("#train-dataset"), state.datasets,
    (d) => [d.id, `${datasetName(d)} (${d.rows} rows × ${d.input_width})`], "upload a dataset first");
}

function renderJobs() {
  const body = $("#jobs tbody");
  body.replaceChildren();
  for (const j of state.jobs) {
    const tr = document.createElement("tr");
    cell(tr, j.id.slice(0, 8));
    cell(tr, j.model);
    cell(tr, j.error ? `${j.status}: ${j.error.message}` : j.status);
    const p = document.createElement("progress");
    p.max = 1;
    p.value = j.progress;
    p.setAttribute("aria-label", `job ${j.id.slice(0, 8)} progress`);
    const wrap = document.createElement("span");
    wrap.append(p, ` ${j.epoch}/${j.epochs}`);
    cell(tr, wrap);
    const b = document.createElement("button");
    b.type = "button";
    b.className = "link";
    b.textContent = state.following && state.following.id === j.id ? "Shown" : "Show curve";
    b.addEventListener("click", () => follow(j.id, j.epochs));
    cell(tr, b);
    body.append(tr);
  }
}

function fillSelect(select, items, option, empty) {
  const previous = select.value;
  select.replaceChildren();
  if (!items.length) {
    select.append(new Option(empty, ""));
    return;
  }
  for (const item of items) {
    const [value, label] = option(item);
    select.append(new Option(label, value));
  }
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
}

async function refresh() {
  try {
    const [models, datasets, jobs] = await Promise.all([
      api("GET", "/v1/models"),
      api("GET", "/v1/datasets"),
      api("GET", "/v1/jobs?limit=20"),
    ]);
    state.models = models.models;
    state.datasets = datasets.datasets.slice().reverse();
    state.jobs = jobs.jobs;
    renderModels();
    renderDatasets();
    renderJobs();
    // Show a running job's curve by itself, unless another live one is shown.
    const live = state.jobs.find((j) => j.status === "running");
    if (live && (!state.following || state.following.done) && state.following?.id !== live.id) {
      follow(live.id, live.epochs);
    }
    $("#auth-state").textContent = state.token ? "token in use" : "";
  } catch (e) {
    notify(e.message);
  }
}

// ---- Live curve -----------------------------------------------------------------------------

/** Points a curve keeps; beyond it, every other one is dropped (and later epochs thinned alike). */
const MAX_POINTS = 2000;

/** Follows a job's events: history first, then live epochs; reconnects with Last-Event-ID. */
function follow(id, epochs) {
  if (state.following) state.following.controller.abort();
  // `points` keeps every `stride`-th epoch, at most MAX_POINTS of them (a job may have a
  // million epochs); `tail` is the latest epoch, `last` its number (for Last-Event-ID).
  const f = { id, epochs, points: new Map(), stride: 1, tail: null, last: 0, done: false, controller: new AbortController() };
  state.following = f;
  $("#chart-panel").hidden = false;
  $("#chart-title").textContent = `Cost per epoch, job ${id.slice(0, 8)}`;
  draw(f);
  renderJobs();
  stream(f);
}

async function stream(f) {
  let delay = 500;
  while (!f.done && state.following === f) {
    const last = f.last;
    const headers = { Accept: "text/event-stream" };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    if (last > 0) headers["Last-Event-ID"] = String(last);
    // One controller per connection: aborting it is a dropped connection (we reconnect);
    // aborting `f.controller` stops following altogether.
    f.connection = new AbortController();
    f.controller.signal.addEventListener("abort", () => f.connection.abort(), { once: true });
    try {
      const resp = await fetch(`/v1/jobs/${f.id}/events`, { headers, signal: f.connection.signal });
      if (!resp.ok) {
        const json = await resp.json().catch(() => null);
        status(f, explain(resp.status, json));
        return;
      }
      delay = 500;
      await readEvents(resp.body, (ev) => onEvent(f, ev));
    } catch (e) {
      if (f.controller.signal.aborted) return;
    }
    if (!f.done) {
      status(f, "Connection lost; reconnecting…");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 8000);
    }
  }
}

/** Parses a text/event-stream body, calling `on({event, id, data})` per event. */
async function readEvents(body, on) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const ev = { event: "message", data: [] };
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "data") ev.data.push(val); else ev[field] = val;
      }
      if (ev.data.length) on({ ...ev, data: JSON.parse(ev.data.join("\n")) });
    }
  }
}

function onEvent(f, ev) {
  if (state.following !== f) return;
  if (ev.event === "epoch") {
    const e = ev.data.epoch;
    if (e <= f.last) return;
    f.last = e;
    f.tail = ev.data;
    if (e % f.stride === 0) f.points.set(e, ev.data);
    if (f.points.size > MAX_POINTS) {
      f.stride *= 2;
      for (const k of [...f.points.keys()]) if (k % f.stride !== 0) f.points.delete(k);
    }
    draw(f);
  } else if (ev.event === "end") {
    f.done = true;
    f.epochs = ev.data.epochs;
    draw(f);
    const j = ev.data;
    status(f, j.status === "succeeded"
      ? `Finished: version ${j.model_version} of ${j.model} after ${j.epoch} epochs (${j.stop_reason}).`
      : `Ended ${j.status}${j.error ? `: ${j.error.message}` : ""}.`);
    refresh();
  }
}

function status(f, text) {
  if (state.following === f) $("#chart-status").textContent = text;
}

let drawPending = false;

function draw(f) {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    render(f);
  });
}

function render(f) {
  const svg = $("#chart");
  const W = 640, H = 300, L = 56, R = 12, T = 12, B = 32;
  const pts = [...f.points.values()].sort((a, b) => a.epoch - b.epoch);
  if (f.tail && !f.points.has(f.tail.epoch)) pts.push(f.tail);
  const n = Math.max(f.epochs || 1, pts.length ? pts[pts.length - 1].epoch : 1);
  const costs = pts.flatMap((p) => (p.val_cost !== undefined ? [p.cost, p.val_cost] : [p.cost]));
  const lo = costs.length ? Math.min(...costs) : 0;
  const hi = costs.length ? Math.max(...costs) : 1;
  const span = hi - lo || Math.abs(hi) || 1;
  const x = (e) => L + ((e - 1) / Math.max(1, n - 1)) * (W - L - R);
  const y = (c) => T + (1 - (c - lo) / span) * (H - T - B);
  const line = (get) => pts.filter((p) => get(p) !== undefined).map((p) => `${x(p.epoch).toFixed(1)},${y(get(p)).toFixed(1)}`).join(" ");
  const ns = "http://www.w3.org/2000/svg";
  const el = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  svg.replaceChildren(
    el("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
    el("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
    el("text", { x: L - 6, y: T + 10, "text-anchor": "end" }, fmt(hi, 3)),
    el("text", { x: L - 6, y: H - B, "text-anchor": "end" }, fmt(lo, 3)),
    el("text", { x: L, y: H - 10 }, "1"),
    el("text", { x: W - R, y: H - 10, "text-anchor": "end" }, `epoch ${n}`),
    el("polyline", { class: "cost", points: line((p) => p.cost) }),
    el("polyline", { class: "val", points: line((p) => p.val_cost) }),
  );
  svg.dataset.points = String(pts.length);
  const last = pts[pts.length - 1];
  if (!f.done) {
    status(f, last
      ? `Epoch ${last.epoch} of ${n}: cost ${fmt(last.cost)}${last.val_cost !== undefined ? `, validation ${fmt(last.val_cost)}` : ""}`
      : "Waiting for the first epoch…");
  }
}

// ---- Forms ----------------------------------------------------------------------------------

const SAMPLE_BYTES = 64 * 1024;
const MISSING = new Set(["", "NA", "NaN", "null", "?"]);

/** The first rows of a CSV file (quoted fields with commas, doubled quotes, CRLF, a BOM). */
async function sampleRows(file) {
  let text = await file.slice(0, SAMPLE_BYTES).text();
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const rows = [];
  let row = [], field = "", quoted = false;
  for (let i = 0; i < text.length && rows.length < 500; i++) {
    const c = text[i];
    if (quoted) {
      if (c !== '"') field += c;
      else if (text[i + 1] === '"') { field += '"'; i++; } else quoted = false;
    } else if (c === '"') {
      quoted = true;
    } else if (c === ",") {
      row.push(field.trim()); field = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field.trim()); field = "";
      rows.push(row); row = [];
    } else {
      field += c;
    }
  }
  // The sample may cut the last line; keep it only if the whole file was read.
  if (file.size <= SAMPLE_BYTES && (row.length || field)) { row.push(field.trim()); rows.push(row); }
  return rows;
}

/** Each column's type as the server will infer it: text if any non-missing cell is not a number. */
function detectTypes(rows) {
  const [header, ...body] = rows;
  return header.map((name, j) => {
    const cells = body.map((r) => r[j] ?? "").filter((v) => !MISSING.has(v));
    const text = cells.find((v) => !Number.isFinite(Number(v)));
    return { name, type: text === undefined ? "numeric" : "categorical", example: text ?? cells[0] ?? "", missing: body.length - cells.length };
  });
}

function renderCsvColumns(columns, sampled) {
  const body = $("#csv-columns tbody");
  body.replaceChildren();
  const target = $("#csv-target").value;
  for (const c of columns) {
    const tr = document.createElement("tr");
    cell(tr, c.name);
    cell(tr, c.type === "categorical" ? `categorical (text: “${c.example}”)` : "numeric");
    const role = document.createElement("select");
    role.dataset.column = c.name;
    role.setAttribute("aria-label", `Use column ${c.name} as`);
    for (const [value, label] of [["auto", c.name === target ? "the target" : "a feature"], ["categorical", "categorical"], ["numeric", "numeric"], ["ignore", "ignore it"]]) {
      role.append(new Option(label, value));
    }
    role.disabled = c.name === target;
    cell(tr, role);
    body.append(tr);
  }
  $("#csv-columns-caption").textContent = `Column types detected in the first ${sampled} rows (the server reads the whole file)`;
  $("#csv-columns-wrap").hidden = false;
}

function parseHidden(text) {
  const layers = [];
  for (const part of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    const m = part.match(/^(\d+)\s*([a-z_]+)?$/);
    if (!m) throw new ApiError(`“${part}” is not a layer: write units then an activation, like “16 relu”.`);
    layers.push({ units: Number(m[1]), activation: m[2] || "relu" });
  }
  return layers;
}

function parseRows(text) {
  const rows = text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean).map((l, i) => {
    const values = l.replace(/^\[|\]$/g, "").split(/[\s,;]+/).filter(Boolean).map(Number);
    if (!values.length || values.some((v) => !Number.isFinite(v))) {
      throw new ApiError(`Row ${i + 1} is not a list of numbers.`);
    }
    return values;
  });
  if (!rows.length) throw new ApiError("Enter at least one row of numbers.");
  return rows;
}

function wire() {
  $("#auth-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("#token").value.trim();
    attempt(refresh);
  });

  $("#csv-file").addEventListener("change", () => attempt(async () => {
    const file = $("#csv-file").files[0];
    const select = $("#csv-target");
    select.replaceChildren();
    $("#csv-columns-wrap").hidden = true;
    if (!file) return;
    const rows = await sampleRows(file);
    if (!rows.length) throw new ApiError("The file has no header row.");
    const columns = detectTypes(rows);
    for (const c of columns) select.append(new Option(c.name, c.name));
    select.value = columns[columns.length - 1].name;
    select.disabled = false;
    state.csvColumns = columns;
    state.csvSampled = rows.length - 1;
    renderCsvColumns(columns, rows.length - 1);
  }));

  $("#csv-target").addEventListener("change", () => {
    if (state.csvColumns) renderCsvColumns(state.csvColumns, state.csvSampled);
  });

  $("#upload-form").addEventListener("submit", (e) => {
    e.preventDefault();
    attempt(async () => {
      const file = $("#csv-file").files[0];
      const target = $("#csv-target").value;
      const name = file.name.replace(/\.csv$/i, "").slice(0, 128);
      const q = new URLSearchParams({ target, name });
      for (const role of $("#csv-columns tbody").querySelectorAll("select[data-column]")) {
        if (role.value !== "auto" && role.dataset.column !== target) q.append(role.value, role.dataset.column);
      }
      const d = await api("POST", `/v1/datasets?${q}`, file, "text/csv");
      renderDatasetColumns(d);
      await refresh();
      $("#train-dataset").value = d.id;
      if (!$("#model-name").value) $("#model-name").value = name.replace(/[^A-Za-z0-9_.-]/g, "-");
      notify(`Uploaded ${datasetName(d)}: ${d.rows} rows, ${d.input_width} inputs.`, true);
    });
  });

  $("#train-form").addEventListener("submit", (e) => {
    e.preventDefault();
    attempt(async () => {
      const d = state.datasets.find((x) => x.id === $("#train-dataset").value);
      if (!d) throw new ApiError("Choose a dataset to train on.");
      const output = d.classes
        ? { units: d.classes.values.length, activation: "softmax" }
        : { units: d.target_width, activation: "identity" };
      const name = $("#model-name").value.trim();
      const layers = [...parseHidden($("#hidden").value), output];
      try {
        // No `inputs`: the network's width follows from the encoded columns (one-hot levels).
        await api("POST", "/v1/models", { name, layers });
      } catch (err) {
        // An existing model of that name trains again (a new version) if the data fits it.
        if (!/exists/.test(err.message)) throw err;
      }
      const job = await api("POST", `/v1/models/${encodeURIComponent(name)}/train`, {
        dataset_id: d.id,
        epochs: Number($("#epochs").value),
        learning_rate: Number($("#lr").value),
        batch_size: Number($("#batch").value),
        validation_split: Number($("#val").value),
        optimizer: $("#optimizer").value,
      });
      notify(`Training ${name}: job ${job.id.slice(0, 8)} started.`, true);
      await refresh();
      follow(job.id, job.epochs);
    });
  });

  $("#predict-model").addEventListener("change", () => attempt(loadRecordForm));

  $("#predict-form").addEventListener("submit", (e) => {
    e.preventDefault();
    attempt(async () => {
      const model = $("#predict-model").value;
      if (!model) throw new ApiError("Train a model first: there is none to predict with.");
      const byRecord = e.submitter && e.submitter.id === "predict-record-button";
      const request = byRecord ? { records: [formRecord()] } : { inputs: parseRows($("#predict-rows").value) };
      const r = await api("POST", `/v1/models/${encodeURIComponent(model)}/predict`, request);
      const body = $("#predictions tbody");
      body.replaceChildren();
      r.outputs.forEach((out, i) => {
        const tr = document.createElement("tr");
        cell(tr, String(i + 1));
        cell(tr, r.labels ? String(r.labels[i]) : "–");
        // Probabilities by label (classifiers) to three places; other outputs to four digits.
        cell(tr, r.probabilities
          ? Object.entries(r.probabilities[i]).map(([label, p]) => `${label}: ${p.toFixed(3)}`).join(", ")
          : out.map((v) => (r.labels ? v.toFixed(3) : fmt(v))).join(", "));
        body.append(tr);
      });
      $("#predictions").hidden = false;
      $("#predictions caption").textContent = `Predictions of ${r.model} v${r.version}`;
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  wire();
  const needsToken = document.body.dataset.auth === "required";
  if (needsToken) {
    notify("This server needs an API token: enter it at the top of the page.");
    $("#token").focus();
  } else {
    refresh();
  }
  setInterval(() => {
    if (!document.hidden && (state.token || !needsToken)) refresh();
  }, 2000);
});

// For tests: drop the live connection as a network failure would (the page reconnects).
window.mlpd = { dropStream: () => state.following && state.following.connection && state.following.connection.abort() };
