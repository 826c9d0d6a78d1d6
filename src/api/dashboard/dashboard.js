// The mlpd dashboard: plain JavaScript against the public API, nothing loaded from elsewhere.
"use strict";

const state = {
  token: "",            // kept in memory only: gone when the page closes
  models: [],
  datasets: [],
  jobs: [],
  following: null,      // {id, points: Map(epoch -> report), epochs, done, controller}
  recordKey: "",        // "model@version" whose features the record form shows
  samples: null,        // the bundled datasets, once listed
  compare: new Set(),   // ids of the jobs whose curves are overlaid
  compareTouched: false, // whether people chose them (else the newest model's jobs are)
  histories: new Map(), // job id -> {epochs, final}
  logScale: false,
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
    cell(tr, m.versions.length
      ? `${m.versions.map((v) => `v${v}`).join(", ")}; serving v${m.serving_version}${m.serving_policy === "pinned" ? " (pinned)" : ""}`
      : "not trained");
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
  const vm = $("#versions-model");
  fillSelect(vm, state.models.filter((m) => m.versions.length), (m) => [m.name, m.name], "no trained model yet");
  if (vm.dataset.want && [...vm.options].some((o) => o.value === vm.dataset.want)) {
    vm.value = vm.dataset.want;
    delete vm.dataset.want;
  }
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
  fillSelect($("#eval-dataset"), state.datasets, (d) => [d.id, `${datasetName(d)} (${d.rows} rows)`], "no dataset");
}

function renderJobs() {
  const body = $("#jobs tbody");
  body.replaceChildren();
  for (const j of state.jobs) {
    const tr = document.createElement("tr");
    const pick = document.createElement("input");
    pick.type = "checkbox";
    pick.checked = state.compare.has(j.id);
    pick.dataset.job = j.id;
    pick.setAttribute("aria-label", `compare job ${j.id.slice(0, 8)}`);
    pick.addEventListener("change", () => {
      state.compareTouched = true;
      if (pick.checked) state.compare.add(j.id); else state.compare.delete(j.id);
      compareChanged();
    });
    cell(tr, pick);
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
    chooseCompared();
    renderModels();
    renderDatasets();
    renderJobs();
    renderWelcome();
    compareChanged();
    await loadVersions();
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
  $("#chart-status").textContent = "Waiting for the first epoch…"; // not the previous job's end
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

/** An SVG element with its attributes (presentation attributes only: the CSP forbids inline
 *  styles) and text. */
function svgEl(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
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
  const el = svgEl;
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

// ---- First visit ----------------------------------------------------------------------------

/** On an empty server: what to do first (upload, or a bundled dataset in one click) instead of
 *  empty tables. */
function renderWelcome() {
  const empty = !state.models.length && !state.datasets.length && !state.jobs.length;
  $("#welcome").hidden = !empty;
  for (const s of document.querySelectorAll("main section.data")) s.hidden = empty;
  if (empty && !state.samples) loadSamples().catch((e) => notify(e.message));
}

async function loadSamples() {
  state.samples = (await api("GET", "/v1/samples")).samples;
  $("#samples").replaceChildren(...state.samples.map((s) => {
    const box = document.createElement("div");
    box.className = "sample";
    const b = document.createElement("button");
    b.type = "button";
    b.id = `start-${s.name}`;
    b.textContent = `Start with ${s.name}`;
    b.addEventListener("click", () => attempt(() => startWith(s)));
    const p = document.createElement("p");
    p.textContent = `${s.description} Trains ${describeLayers(s.model.layers)} for ${s.train.epochs} epochs.`;
    box.append(b, p);
    return box;
  }));
}

function describeLayers(layers) {
  return layers.map((l) => `${l.units} ${l.activation}`).join(" → ");
}

/** Stores a bundled dataset, defines the model suggested for it, and trains it. */
async function startWith(s) {
  const buttons = [...$("#samples").querySelectorAll("button")];
  buttons.forEach((b) => { b.disabled = true; });
  try {
    const d = await api("POST", `/v1/samples/${encodeURIComponent(s.name)}`);
    try {
      await api("POST", "/v1/models", { name: s.name, ...s.model });
    } catch (err) {
      if (!/exists/.test(err.message)) throw err;
    }
    const job = await api("POST", `/v1/models/${encodeURIComponent(s.name)}/train`, { dataset_id: d.id, ...s.train });
    notify(`Started with ${s.name}: the dataset is stored, model “${s.name}” is defined (${describeLayers(s.model.layers)}) and job ${job.id.slice(0, 8)} trains it.`, true);
    state.compareTouched = false;
    $("#versions-model").dataset.want = s.name;
    await refresh();
    follow(job.id, job.epochs);
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

// ---- Charts ---------------------------------------------------------------------------------

/** Colours for overlaid curves (classes c0…c7 in the stylesheet). */
const PALETTE = 8;

/** Draws lines `[{cls, job, points: [[x, y], …]}]` on a 640×300 chart with axes and grid;
 *  `log` puts y on a base-10 logarithmic scale (values ≤ 0 are left out there). */
function lineChart(svg, lines, { log = false, yRange = null, yFormat = (v) => fmt(v, 3) } = {}) {
  const W = 640, H = 300, L = 60, R = 14, T = 12, B = 34;
  const ok = (y) => Number.isFinite(y) && (!log || y > 0);
  const t = log ? Math.log10 : (v) => v;
  // Loops, not Math.max(...points): a long history would overflow the argument list.
  let xMax = 2, lo = Infinity, hi = -Infinity;
  for (const l of lines) {
    for (const [e, v] of l.points) {
      if (!ok(v)) continue;
      xMax = Math.max(xMax, e);
      lo = Math.min(lo, t(v));
      hi = Math.max(hi, t(v));
    }
  }
  if (yRange) [lo, hi] = yRange.map(t);
  else if (lo > hi) [lo, hi] = [0, 1];
  if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
  const x = (e) => L + ((e - 1) / (xMax - 1)) * (W - L - R);
  const y = (v) => T + (1 - (t(v) - lo) / (hi - lo)) * (H - T - B);
  const ticks = [];
  if (log) {
    for (let k = Math.ceil(lo - 1e-9); k <= Math.floor(hi + 1e-9); k++) ticks.push(10 ** k);
    if (ticks.length < 2) ticks.splice(0, ticks.length, 10 ** lo, 10 ** hi);
  } else {
    for (let i = 0; i <= 4; i++) ticks.push(lo + ((hi - lo) * i) / 4);
  }
  const kids = [];
  for (const v of ticks) {
    kids.push(svgEl("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    kids.push(svgEl("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, yFormat(v)));
  }
  kids.push(
    svgEl("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
    svgEl("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
    svgEl("text", { x: L, y: H - 14 }, "1"),
    svgEl("text", { x: (L + W - R) / 2, y: H - 14, "text-anchor": "middle" }, "epoch"),
    svgEl("text", { x: W - R, y: H - 14, "text-anchor": "end" }, String(xMax)),
  );
  let drawn = 0;
  for (const l of lines) {
    const pts = thin(l.points.filter(([, v]) => ok(v)), 1500);
    if (!pts.length) continue;
    drawn += l.cls.includes("val") ? 0 : 1;
    const line = svgEl("polyline", { class: `curve ${l.cls}`, "data-job": l.job,
      points: pts.map(([e, v]) => `${x(e).toFixed(1)},${y(v).toFixed(1)}`).join(" ") });
    if (l.title) line.append(svgEl("title", {}, l.title));
    kids.push(line);
  }
  svg.replaceChildren(...kids);
  svg.dataset.scale = log ? "log" : "linear";
  svg.dataset.curves = String(drawn);
}

/** At most `max` points, evenly chosen, the last one kept. */
function thin(points, max) {
  if (points.length <= max) return points;
  const step = points.length / max;
  const out = [];
  for (let i = 0; i < max; i++) out.push(points[Math.floor(i * step)]);
  out.push(points[points.length - 1]);
  return out;
}

// ---- Overlaid curves ------------------------------------------------------------------------

const FINISHED = new Set(["succeeded", "failed", "canceled"]);

/** A job's whole history (pages of the history route), fetched once it has finished and
 *  followed by offset while it runs. */
async function history(job) {
  let h = state.histories.get(job.id);
  if (!h) {
    h = { epochs: [], final: false };
    state.histories.set(job.id, h);
  }
  if (h.final) return h;
  let offset = h.epochs.length;
  for (;;) {
    const page = await api("GET", `/v1/jobs/${job.id}/history?offset=${offset}&limit=10000`);
    h.epochs.push(...page.epochs);
    if (page.next_offset === undefined || h.epochs.length >= 200000) {
      h.final = FINISHED.has(page.status);
      return h;
    }
    offset = page.next_offset;
  }
}

/** Unless people chose themselves: the newest model's jobs (up to six) are compared. */
function chooseCompared() {
  if (state.compareTouched || !state.jobs.length) return;
  const model = state.jobs[0].model;
  state.compare = new Set(state.jobs.filter((j) => j.model === model && j.status !== "failed").slice(0, 6).map((j) => j.id));
}

let compareKey = "";
let compareSeq = 0;

function compareChanged() {
  const jobs = state.jobs.filter((j) => state.compare.has(j.id));
  const key = `${state.logScale}|${jobs.map((j) => `${j.id}:${j.epoch}:${j.status}`).join(",")}`;
  if (key !== compareKey) {
    compareKey = key;
    drawCompare(jobs).catch((e) => notify(e.message));
  }
}

async function drawCompare(jobs) {
  const seq = ++compareSeq;
  // A job deleted meanwhile draws nothing rather than failing the others.
  const hs = await Promise.all(jobs.map((j) => history(j).catch(() => ({ epochs: [], final: true }))));
  if (seq !== compareSeq) return;
  const colour = (i) => `c${i % PALETTE}`;
  const name = (j) => `${j.model}${j.model_version ? ` v${j.model_version}` : ""} (job ${j.id.slice(0, 8)})`;
  const series = (get, val) => jobs.map((j, i) => ({
    cls: `${colour(i)}${val ? " val" : ""}`,
    job: j.id,
    title: `${name(j)}${val ? ", validation" : ""}`,
    points: hs[i].epochs.filter((e) => get(e) !== undefined).map((e) => [e.epoch, get(e)]),
  }));
  lineChart($("#compare-cost"), [...series((e) => e.cost), ...series((e) => e.val_cost, true)], { log: state.logScale });
  const acc = [...series((e) => e.accuracy), ...series((e) => e.val_accuracy, true)];
  const anyAcc = acc.some((l) => l.points.length);
  $("#compare-acc-figure").hidden = !anyAcc;
  if (anyAcc) lineChart($("#compare-acc"), acc, { yRange: [0, 1], yFormat: (v) => `${Math.round(v * 100)}%` });
  $("#compare-legend").replaceChildren(...jobs.map((j, i) => {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = `swatch ${colour(i)}`;
    const p = j.params;
    const last = hs[i].epochs[hs[i].epochs.length - 1];
    li.append(sw, ` ${name(j)}: lr ${p.learning_rate}, batch ${p.batch_size}, ${j.status}${last ? `, final cost ${fmt(last.cost)}` : ""}`);
    return li;
  }));
  if (!jobs.length) {
    const li = document.createElement("li");
    li.textContent = "No job chosen.";
    $("#compare-legend").replaceChildren(li);
  }
}

// ---- Versions and serving -------------------------------------------------------------------

let versionsKey = "";
let versionsSeq = 0;

/** Reloads the chosen model's versions when they or what it serves changed (or when forced). */
async function loadVersions(force = false) {
  const name = $("#versions-model").value;
  const m = state.models.find((x) => x.name === name);
  const key = m ? `${name}|${m.versions.join(",")}|${m.serving_version}|${m.serving_policy}|${JSON.stringify(m.aliases)}` : "";
  if (!force && key === versionsKey) return;
  versionsKey = key;
  if (!m) {
    $("#versions tbody").replaceChildren();
    $("#serving-state").textContent = "Train a model to see its versions here.";
    $("#unpin").hidden = true;
    return;
  }
  const seq = ++versionsSeq;
  const path = `/v1/models/${encodeURIComponent(name)}`;
  const [list, serving] = await Promise.all([api("GET", `${path}/versions`), api("GET", `${path}/serving`)]);
  const evals = await Promise.all(list.versions.map((v) =>
    api("GET", `${path}/versions/${v.version}/evaluations`).then((r) => r.evaluations, () => [])));
  if (seq !== versionsSeq) return; // a newer call renders
  renderVersions(name, list.versions, serving, evals);
}

function badge(text, cls = "") {
  const b = document.createElement("span");
  b.className = `badge ${cls}`;
  b.textContent = text;
  return b;
}

function button(text, onClick, cls = "") {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  if (cls) b.className = cls;
  b.addEventListener("click", () => attempt(onClick));
  return b;
}

/** A bar of `fraction` of its width: accuracy as a picture. */
function bar(fraction) {
  const svg = svgEl("svg", { class: "bar", viewBox: "0 0 100 8", "aria-hidden": "true", preserveAspectRatio: "none" });
  svg.append(svgEl("rect", { x: 0, y: 0, height: 8, width: (Math.max(0, Math.min(1, fraction)) * 100).toFixed(1) }));
  return svg;
}

function renderVersions(name, versions, serving, evals) {
  const served = serving.version;
  const pinned = serving.policy === "pinned";
  $("#serving-state").textContent = served === undefined
    ? `${name} has no version yet.`
    : `${name} serves version ${served}: ${pinned
      ? "pinned (new versions are stored, not served, until you return to latest)"
      : "the latest (each new version is served as soon as it is trained)"}.`
      + (serving.history && serving.history.length ? ` Last change: ${describeChange(serving.history[0])}.` : "");
  $("#unpin").hidden = !pinned;
  // Evaluate on the data the newest version learned from, until another model is shown.
  const choice = $("#eval-dataset");
  const trainedOn = versions.length ? versions[versions.length - 1].dataset_id : undefined;
  if (choice.dataset.model !== name && [...choice.options].some((o) => o.value === trainedOn)) {
    choice.value = trainedOn;
    choice.dataset.model = name;
  }
  const body = $("#versions tbody");
  body.replaceChildren();
  versions.slice().reverse().forEach((v) => {
    const i = versions.indexOf(v);
    const mt = v.metrics;
    const tr = document.createElement("tr");
    tr.dataset.version = String(v.version);
    if (v.served) tr.className = "serving-row";
    cell(tr, `v${v.version}`);
    cell(tr, v.parent_version ? `v${v.parent_version}` : "–");
    cell(tr, `${mt.epochs} epochs, lr ${v.params.learning_rate}, batch ${v.params.batch_size}`);
    cell(tr, `${fmt(mt.cost)}${mt.val_cost !== undefined ? ` (val ${fmt(mt.val_cost)})` : ""}`);
    const acc = mt.val_accuracy ?? mt.accuracy;
    const accCell = cell(tr, mt.accuracy !== undefined
      ? `${(mt.accuracy * 100).toFixed(1)}%${mt.val_accuracy !== undefined ? ` (val ${(mt.val_accuracy * 100).toFixed(1)}%)` : ""}`
      : "–");
    if (acc !== undefined) accCell.append(bar(acc));
    const badges = document.createElement("span");
    if (v.served) badges.append(badge("serving", "serving"));
    if (v.pinned) badges.append(badge("pinned", "pinned"));
    for (const a of v.aliases || []) badges.append(badge(a));
    cell(tr, badges);
    const actions = document.createElement("span");
    if (!v.served && served !== undefined) {
      const up = v.version > served;
      const b = button(up ? `Promote v${v.version}` : `Roll back to v${v.version}`, () => pin(name, v.version, served));
      b.dataset.action = up ? "promote" : "rollback";
      actions.append(b);
    }
    const ev = button("Evaluate", () => evaluate(name, v.version), "secondary");
    ev.dataset.action = "evaluate";
    actions.append(ev);
    if (evals[i].length) {
      const show = button(`Evaluation (${evals[i].length})`, async () => showEvaluation(evals[i][0]), "secondary");
      show.dataset.action = "show-evaluation";
      actions.append(show);
    }
    cell(tr, actions);
    body.append(tr);
  });
}

function describeChange(c) {
  const when = new Date(c.at).toLocaleTimeString();
  const what = c.alias ? `alias ${c.alias}` : "served version";
  return `${what} ${c.from ? `v${c.from}` : "none"} → ${c.to ? `v${c.to}` : "none"} (${c.cause.replace(/_/g, " ")}, ${when})`;
}

/** Asks in a modal dialog; true when confirmed. */
function confirmed(text, action) {
  const d = $("#confirm");
  $("#confirm-text").textContent = text;
  $("#confirm-yes").textContent = action;
  d.returnValue = "";
  return new Promise((resolve) => {
    d.addEventListener("close", () => resolve(d.returnValue === "yes"), { once: true });
    d.showModal();
    $("#confirm-no").focus();
  });
}

async function pin(name, version, from) {
  const verb = version > from ? "Promote" : "Roll back to";
  const ok = await confirmed(`${verb} version ${version} of ${name}? Predictions will use version ${version} instead of ${from} at once, and new versions will be stored without being served until you return to latest.`,
    `${verb} v${version}`);
  if (!ok) return;
  await api("PUT", `/v1/models/${encodeURIComponent(name)}/serving`, { version });
  notify(`${name} now serves version ${version}.`, true);
  await refresh();
  await loadVersions(true);
}

async function unpin() {
  const name = $("#versions-model").value;
  const ok = await confirmed(`Return ${name} to its latest version? Predictions will use the newest version at once, and each new version will be served as soon as it is trained.`,
    "Return to latest");
  if (!ok) return;
  const s = await api("DELETE", `/v1/models/${encodeURIComponent(name)}/serving`);
  notify(`${name} serves its latest version (v${s.version}) again.`, true);
  await refresh();
  await loadVersions(true);
}

async function evaluate(name, version) {
  const dataset = $("#eval-dataset").value;
  if (!dataset) throw new ApiError("Choose a dataset to evaluate on.");
  const e = await api("POST", `/v1/models/${encodeURIComponent(name)}/versions/${version}/evaluate`, { dataset_id: dataset });
  await loadVersions(true);
  showEvaluation(e);
}

// ---- Evaluations ----------------------------------------------------------------------------

function showEvaluation(e) {
  const d = state.datasets.find((x) => x.id === e.dataset_id);
  $("#evaluation-title").textContent = `Evaluation of ${e.model} v${e.version} on ${d ? datasetName(d) : e.dataset_id ? e.dataset_id.slice(0, 8) : "data sent with it"}`;
  const s = e.scores;
  const skipped = e.rows_skipped ? ` (${e.rows_skipped} left out: a target was missing)` : "";
  const classes = s.task === "classification";
  $("#confusion-figure").hidden = !classes;
  $("#per-class-wrap").hidden = !classes;
  $("#scatter-figure").hidden = classes;
  if (classes) {
    $("#evaluation-summary").textContent = `${e.rows} rows${skipped}: accuracy ${(s.accuracy * 100).toFixed(1)}%, macro F1 ${fmt(s.macro_f1, 3)}`
      + `${s.log_loss !== undefined ? `, log loss ${fmt(s.log_loss, 3)}` : ""}${s.roc_auc !== undefined ? `, ROC AUC ${fmt(s.roc_auc, 3)}` : ""}.`;
    heatMap($("#confusion"), s.labels, s.confusion_matrix);
    const body = $("#per-class tbody");
    body.replaceChildren(...s.per_class.map((c) => {
      const tr = document.createElement("tr");
      cell(tr, c.label);
      cell(tr, fmt(c.precision, 3));
      cell(tr, fmt(c.recall, 3));
      cell(tr, fmt(c.f1, 3));
      cell(tr, String(c.support));
      return tr;
    }));
  } else {
    const t = s.targets[0];
    $("#evaluation-summary").textContent = `${e.rows} rows${skipped}: ` + s.targets.map((x) =>
      `${x.target}: R² ${x.r2 !== undefined ? fmt(x.r2, 3) : "–"}, RMSE ${fmt(x.rmse, 3)}, MAE ${fmt(x.mae, 3)}`).join("; ") + ".";
    $("#scatter-title").textContent = `Predicted versus actual ${t.target}${s.targets.length > 1 ? ` (the first of ${s.targets.length} targets)` : ""}: on the dashed line, the prediction is exact`;
    scatter($("#scatter"), t.pairs || []);
  }
  $("#evaluation-panel").hidden = false;
  $("#evaluation-panel").dataset.evaluation = e.id;
}

/** The confusion matrix as a heat map: each cell's shade is its share of the true class's rows,
 *  its count written in it. */
function heatMap(svg, labels, matrix) {
  const k = labels.length;
  const cellSize = Math.max(34, Math.min(90, Math.floor(420 / k)));
  const longest = Math.max(...labels.map((l) => l.length));
  const L = Math.min(130, 30 + 7 * longest), T = 46;
  const W = L + k * cellSize + 8, H = T + k * cellSize + 8;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const short = (l) => (l.length * 7 > cellSize - 4 ? `${l.slice(0, Math.max(1, Math.floor((cellSize - 4) / 7) - 1))}…` : l);
  const kids = [
    svgEl("text", { class: "axis-label", x: L + (k * cellSize) / 2, y: 14, "text-anchor": "middle" }, "predicted"),
    svgEl("text", { class: "axis-label", x: 12, y: T + (k * cellSize) / 2, "text-anchor": "middle",
      transform: `rotate(-90 12 ${T + (k * cellSize) / 2})` }, "true"),
  ];
  labels.forEach((l, j) => {
    const t = svgEl("text", { x: L + j * cellSize + cellSize / 2, y: T - 8, "text-anchor": "middle" }, short(l));
    t.append(svgEl("title", {}, l));
    kids.push(t);
    kids.push(svgEl("text", { x: L - 6, y: T + j * cellSize + cellSize / 2 + 4, "text-anchor": "end" }, l.length > 16 ? `${l.slice(0, 15)}…` : l));
  });
  matrix.forEach((row, i) => {
    const total = row.reduce((a, b) => a + b, 0);
    row.forEach((count, j) => {
      const share = total ? count / total : 0;
      const rect = svgEl("rect", { class: "cell", x: L + j * cellSize, y: T + i * cellSize, width: cellSize - 1, height: cellSize - 1,
        fill: shade(share, i === j), "data-row": i, "data-col": j, "data-count": count });
      rect.append(svgEl("title", {}, `${count} of ${total} rows of class ${labels[i]} predicted as ${labels[j]}`));
      kids.push(rect);
      kids.push(svgEl("text", { class: `cell-text${share > 0.5 ? " dark" : ""}`, x: L + j * cellSize + cellSize / 2,
        y: T + i * cellSize + cellSize / 2 + 4, "text-anchor": "middle" }, String(count)));
    });
  });
  svg.replaceChildren(...kids);
}

/** White to blue (right answers) or to red (mistakes) by `share`. */
function shade(share, diagonal) {
  const [r, g, b] = diagonal ? [9, 105, 218] : [207, 34, 46];
  const mix = (c) => Math.round(255 + (c - 255) * Math.sqrt(share));
  return `rgb(${mix(r)}, ${mix(g)}, ${mix(b)})`;
}

/** Predicted (x) against actual (y) with the line y = x. */
function scatter(svg, pairs) {
  const W = 420, H = 420, L = 56, R = 12, T = 12, B = 40;
  if (!pairs.length) {
    svg.replaceChildren(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "No rows kept with this evaluation: evaluate again."));
    svg.dataset.points = "0";
    return;
  }
  const vals = pairs.flatMap((p) => [p.predicted, p.actual]);
  let lo = Math.min(...vals), hi = Math.max(...vals);
  const pad = (hi - lo) * 0.04 || 1;
  lo -= pad; hi += pad;
  const x = (v) => L + ((v - lo) / (hi - lo)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const kids = [];
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4;
    kids.push(svgEl("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    kids.push(svgEl("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v, 3)));
    kids.push(svgEl("text", { x: x(v), y: H - B + 16, "text-anchor": "middle" }, fmt(v, 3)));
  }
  kids.push(
    svgEl("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
    svgEl("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
    svgEl("text", { class: "axis-label", x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, "predicted"),
    svgEl("text", { class: "axis-label", x: 14, y: (T + H - B) / 2, "text-anchor": "middle", transform: `rotate(-90 14 ${(T + H - B) / 2})` }, "actual"),
    svgEl("line", { class: "identity", x1: x(lo), y1: y(lo), x2: x(hi), y2: y(hi) }),
  );
  for (const p of pairs) kids.push(svgEl("circle", { class: "point", cx: x(p.predicted).toFixed(1), cy: y(p.actual).toFixed(1), r: 3 }));
  svg.replaceChildren(...kids);
  svg.dataset.points = String(pairs.length);
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

  $("#welcome-upload").addEventListener("click", () => {
    $("#csv-file").scrollIntoView();
    $("#csv-file").focus();
  });
  $("#log-scale").addEventListener("change", () => {
    state.logScale = $("#log-scale").checked;
    compareChanged();
  });
  $("#versions-model").addEventListener("change", () => {
    $("#evaluation-panel").hidden = true;
    attempt(() => loadVersions(true));
  });
  $("#unpin").addEventListener("click", () => attempt(unpin));
  $("#confirm-yes").addEventListener("click", () => $("#confirm").close("yes"));
  $("#confirm-no").addEventListener("click", () => $("#confirm").close("no"));

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
