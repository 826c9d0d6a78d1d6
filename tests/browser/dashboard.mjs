// The dashboard in a real headless Chromium (Debian's /usr/bin/chromium) against the real
// binary, with authentication on:
//   node tests/browser/dashboard.mjs [path/to/mlpd] [screenshot.png] [directory for the others]
// Checks: the page loads with no console errors; a token entered once unlocks it; an empty
// server offers what to do first and starts with the bundled iris in one click; a second
// version trained from the form; both jobs' curves overlaid (accuracy beside, a log-scale
// switch); a version evaluated, its confusion matrix a heat map of the evaluation's counts;
// roll back, promote and return to latest through a confirmation dialog, checked through the
// API; a regression's evaluation drawn as predicted against actual (screenshots of each); a CSV upload
// and a training started from the page; a real table (titanic: text columns, empty cells) shows
// its detected column types before upload, takes a column to ignore, trains, and predicts a
// record typed into per-feature fields (dropdowns for categoricals); the job's curve gains points epoch by epoch, survives a
// dropped connection (reconnect with Last-Event-ID, no gap, no duplicate) and a page reload
// (replay); a job started by another client shows up with its curve; a prediction shows its
// label; errors in plain words; labelled inputs; no sideways
// scrolling at phone width. Saves a screenshot.
import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const bin = resolve(process.argv[2] ?? join(root, "target/debug/mlpd"));
const shot = resolve(process.argv[3] ?? join(root, "target/dashboard.png"));
// Where the screenshots of the curves, the versions and the confusion matrix go (the README's
// come from `… docs/dashboard.png docs`).
const shots = resolve(process.argv[4] ?? dirname(shot));
const TOKEN = "dashboard-test-token";

const port = await new Promise((ok) => {
  const s = createServer().listen(0, "127.0.0.1", () => {
    const p = s.address().port;
    s.close(() => ok(p));
  });
});
const dataDir = mkdtempSync(join(tmpdir(), "mlpd-browser-"));
const server = spawn(bin, ["--bind", `127.0.0.1:${port}`, "--data-dir", dataDir, "--log-format", "json"], {
  env: { ...process.env, MLPD_ADMIN_TOKENS: TOKEN, RUST_LOG: "warn" },
  stdio: ["ignore", "ignore", "inherit"],
});
const base = `http://127.0.0.1:${port}`;
for (let i = 0; ; i++) {
  try {
    if ((await fetch(`${base}/health`)).ok) break;
  } catch (_) { /* not up yet */ }
  if (i > 100) throw new Error("the server did not start");
  await new Promise((r) => setTimeout(r, 100));
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const consoleErrors = [];
  const pageErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => pageErrors.push(String(e)));

  // 1. Loads clean, asks for the token, calls nothing before it has one.
  await page.goto(base + "/");
  await page.waitForLoadState("networkidle");
  assert.deepEqual(consoleErrors, [], "no console errors on load");
  assert.match(await page.textContent("#notice"), /needs an API token/);
  const unlabelled = await page.$$eval("input, select, textarea", (els) =>
    els.filter((e) => e.labels.length === 0 && !e.getAttribute("aria-label")).map((e) => e.id));
  assert.deepEqual(unlabelled, [], "every input has a label");

  // 2. The token, entered once (by keyboard), unlocks every call after it.
  await page.focus("#token");
  await page.keyboard.type(TOKEN);
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelector("#auth-state").textContent === "token in use");
  assert.ok(await page.isHidden("#notice"));

  // 2b. An empty server says what to do first instead of showing empty tables; one click
  // starts with the bundled iris: the dataset stored, a model defined, its training started.
  await page.waitForSelector("#welcome:not([hidden])");
  for (const table of ["#jobs", "#models", "#datasets", "#versions"]) {
    assert.ok(await page.isHidden(table), `no empty ${table} table on a first visit`);
  }
  await page.waitForSelector("#start-iris");
  assert.ok(await page.isVisible("#start-digits"));
  assert.ok(await page.isVisible("#welcome-upload"));
  await page.click("#start-iris");
  await page.waitForSelector("#welcome", { state: "hidden" });
  await page.waitForFunction(() => /^Finished: version 1 of iris/.test(document.querySelector("#chart-status").textContent),
    null, { timeout: 60000 });
  const get = (path) => fetch(`${base}${path}`, { headers: { Authorization: `Bearer ${TOKEN}` } }).then((r) => r.json());
  const irisData = (await get("/v1/datasets")).datasets;
  assert.deepEqual(irisData.map((d) => [d.name, d.rows]), [["iris", 150]], "the sample stored as a dataset");

  // 2c. A second version from the page's own form, with another learning rate.
  await page.selectOption("#train-dataset", irisData[0].id);
  await page.fill("#model-name", "iris");
  await page.fill("#epochs", "60");
  await page.fill("#lr", "0.002");
  await page.fill("#batch", "16");
  await page.click("#train-form button[type=submit]");
  await page.waitForFunction(() => /^Finished: version 2 of iris/.test(document.querySelector("#chart-status").textContent),
    null, { timeout: 60000 });
  const irisJobs = (await get("/v1/jobs")).jobs.filter((j) => j.model === "iris").map((j) => j.id);
  assert.equal(irisJobs.length, 2);

  // 2d. Both jobs' cost curves overlaid in one chart (and their accuracy beside); unticking a
  // job takes its curve away; the log-scale switch redraws the cost axis.
  const curves = (svg) => page.$$eval(`${svg} polyline.curve:not(.val)`, (ls) => ls.map((l) => l.dataset.job).sort());
  await page.waitForFunction(() => document.querySelector("#compare-cost").dataset.curves === "2");
  assert.deepEqual(await curves("#compare-cost"), irisJobs.slice().sort(), "one cost curve per job");
  assert.deepEqual(await curves("#compare-acc"), irisJobs.slice().sort(), "one accuracy curve per job");
  assert.equal(await page.$$eval("#compare-cost polyline.val", (ls) => ls.length), 2, "validation curves dashed beside");
  const epochsDrawn = await page.$eval(`#compare-cost polyline.curve[data-job="${irisJobs[0]}"]:not(.val)`, (l) => l.getAttribute("points").split(" ").length);
  assert.equal(epochsDrawn, 60, "one point per epoch");
  await page.uncheck(`#jobs input[data-job="${irisJobs[1]}"]`);
  await page.waitForFunction(() => document.querySelector("#compare-cost").dataset.curves === "1");
  await page.check(`#jobs input[data-job="${irisJobs[1]}"]`);
  await page.waitForFunction(() => document.querySelector("#compare-cost").dataset.curves === "2");
  const linear = await page.$eval("#compare-cost polyline.curve", (l) => l.getAttribute("points"));
  await page.check("#log-scale");
  await page.waitForFunction(() => document.querySelector("#compare-cost").dataset.scale === "log");
  assert.notEqual(await page.$eval("#compare-cost polyline.curve", (l) => l.getAttribute("points")), linear, "redrawn on a log axis");
  await page.$eval("#compare-section", (s) => s.scrollIntoView());
  await page.locator("#compare-section").screenshot({ path: join(shots, "dashboard-curves.png") });

  // 2e. Versions: v2 is served (latest). Evaluate it from its row; the confusion matrix's heat
  // map holds the evaluation's counts, in its label order.
  await page.waitForSelector('#versions tr[data-version="2"] .badge.serving');
  await page.click('#versions tr[data-version="2"] button[data-action="evaluate"]');
  await page.waitForSelector("#evaluation-panel:not([hidden])");
  const evaluation = (await get("/v1/models/iris/versions/2/evaluations")).evaluations[0];
  assert.equal(await page.$eval("#evaluation-panel", (p) => p.dataset.evaluation), evaluation.id);
  const m = evaluation.scores.confusion_matrix;
  const heat = await page.$$eval("#confusion rect.cell", (rs) => rs.map((r) => [Number(r.dataset.row), Number(r.dataset.col), Number(r.dataset.count), r.nextSibling.textContent]));
  assert.equal(heat.length, 9, "3 × 3 cells");
  for (const [i, j, count, text] of heat) {
    assert.equal(count, m[i][j], `cell ${i},${j}`);
    assert.equal(text, String(m[i][j]), `count written in cell ${i},${j}`);
  }
  const labels = await page.$$eval("#confusion > text", (ts) => ts.map((t) => t.textContent));
  for (const l of evaluation.scores.labels) assert.ok(labels.includes(l), `label ${l} shown`);
  assert.match(await page.textContent("#evaluation-summary"), new RegExp(`accuracy ${(evaluation.scores.accuracy * 100).toFixed(1)}%`));
  await page.$eval("#evaluation-panel", (s) => s.scrollIntoView());
  await page.locator("#evaluation-panel").screenshot({ path: join(shots, "dashboard-confusion.png") });

  // 2f. Roll back to v1 through the confirmation dialog: cancelling changes nothing; confirming
  // pins v1 (predictions answer with it); promoting v2 pins it; "return to latest" unpins.
  const serving = () => get("/v1/models/iris/serving");
  const predictVersion = () => fetch(`${base}/v1/models/iris/predict`, {
    method: "POST",
    headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify({ inputs: [[5.1, 3.5, 1.4, 0.2]] }),
  }).then((r) => r.json()).then((r) => r.version);
  await page.click('#versions tr[data-version="1"] button[data-action="rollback"]');
  await page.waitForSelector("#confirm[open]");
  assert.match(await page.textContent("#confirm-text"), /Roll back to version 1 of iris/);
  await page.click("#confirm-no");
  await page.waitForSelector("#confirm", { state: "hidden" });
  await sleep(300);
  assert.deepEqual(await serving().then((s) => [s.policy, s.version]), ["latest", 2], "cancel changes nothing");
  await page.click('#versions tr[data-version="1"] button[data-action="rollback"]');
  await page.click("#confirm-yes");
  await page.waitForSelector('#versions tr[data-version="1"] .badge.serving');
  assert.ok(await page.isVisible('#versions tr[data-version="1"] .badge.pinned'));
  assert.deepEqual(await serving().then((s) => [s.policy, s.version]), ["pinned", 1], "rolled back");
  assert.equal(await predictVersion(), 1);
  assert.ok(await page.isVisible("#unpin"));
  await page.$eval("#versions-section", (s) => s.scrollIntoView());
  await page.locator("#versions-section").screenshot({ path: join(shots, "dashboard-versions.png") });
  await page.click('#versions tr[data-version="2"] button[data-action="promote"]');
  assert.match(await page.textContent("#confirm-text"), /Promote version 2 of iris/);
  await page.click("#confirm-yes");
  await page.waitForSelector('#versions tr[data-version="2"] .badge.pinned');
  assert.deepEqual(await serving().then((s) => [s.policy, s.version]), ["pinned", 2], "promoted");
  assert.equal(await predictVersion(), 2);
  await page.click("#unpin");
  await page.click("#confirm-yes");
  await page.waitForSelector("#unpin", { state: "hidden" });
  assert.deepEqual(await serving().then((s) => [s.policy, s.version]), ["latest", 2], "back to latest");
  assert.ok(await page.isHidden('#versions tr[data-version="2"] .badge.pinned'));

  // 2g. A regression (trained by another client): its evaluation is predicted against actual,
  // every row a point, with the line y = x.
  const send = (method, path, body, type = "application/json") => fetch(`${base}${path}`, {
    method, headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": type }, body,
  }).then((r) => r.json());
  const diabetes = await send("POST", "/v1/datasets?target=progression&name=diabetes",
    readFileSync(join(root, "datasets/diabetes.csv")), "text/csv");
  await send("POST", "/v1/models", JSON.stringify({ name: "diabetes",
    layers: [{ units: 16, activation: "relu" }, { units: 1, activation: "identity" }] }));
  const reg = await send("POST", "/v1/models/diabetes/train", JSON.stringify({ dataset_id: diabetes.id, epochs: 40, seed: 1 }));
  for (let i = 0; (await get(`/v1/jobs/${reg.id}`)).status !== "succeeded"; i++) {
    assert.ok(i < 600, "the regression trains");
    await sleep(100);
  }
  await page.waitForFunction(() => [...document.querySelectorAll("#versions-model option")].some((o) => o.value === "diabetes"));
  await page.selectOption("#versions-model", "diabetes");
  await page.waitForSelector('#versions tr[data-version="1"] button[data-action="evaluate"]');
  assert.equal(await page.$eval("#eval-dataset", (s) => s.value), diabetes.id, "evaluated on the data it learned from");
  await page.click('#versions tr[data-version="1"] button[data-action="evaluate"]');
  await page.waitForSelector("#scatter-figure:not([hidden])");
  assert.ok(await page.isHidden("#confusion-figure"));
  assert.equal(await page.$eval("#scatter", (s) => s.dataset.points), "442", "a point per row");
  assert.equal(await page.$$eval("#scatter circle.point", (c) => c.length), 442);
  assert.equal(await page.$$eval("#scatter line.identity", (l) => l.length), 1, "the line y = x");
  assert.match(await page.textContent("#evaluation-summary"), /progression: R² 0\.\d+/);
  await page.locator("#evaluation-panel").screenshot({ path: join(shots, "dashboard-scatter.png") });

  // 3. Upload digits (8×8 handwritten digits); the target column offered is chosen.
  await page.setInputFiles("#csv-file", join(root, "datasets/digits.csv"));
  await page.waitForFunction(() => !document.querySelector("#csv-target").disabled);
  await page.selectOption("#csv-target", "digit");
  await page.click("#upload-form button[type=submit]");
  await page.waitForSelector("#notice.ok");
  assert.match(await page.textContent("#notice"), /Uploaded digits: 1797 rows, 64 inputs/);
  assert.match(await page.textContent("#datasets"), /10 classes/);

  // 4. Define and train: per-sample updates, so the curve grows slowly enough to watch.
  await page.fill("#model-name", "digits");
  await page.fill("#hidden", "32 relu");
  await page.fill("#epochs", "150");
  await page.fill("#lr", "0.001");
  await page.fill("#batch", "1");
  await page.fill("#val", "0.2");
  const shownBefore = await page.textContent("#chart-title");
  await page.click("#train-form button[type=submit]");
  await page.waitForSelector("#chart-panel:not([hidden])");
  // The chart follows the new job (an earlier job's finished curve was shown).
  await page.waitForFunction((t) => document.querySelector("#chart-title").textContent !== t, shownBefore);
  const points = () => page.$eval("#chart", (s) => Number(s.dataset.points || 0));
  const seen = new Set();
  while (seen.size < 5) {
    seen.add(await points());
    const st = await page.textContent("#chart-status");
    if (/^Finished/.test(st)) break;
    await sleep(30);
  }
  const growth = [...seen].sort((a, b) => a - b);
  assert.ok(growth.length >= 5, `the curve grew point by point: saw ${growth}`);

  // 5. A dropped connection: the page reconnects with Last-Event-ID and the curve goes on.
  const before = await points();
  await page.evaluate(() => window.mlpd.dropStream());
  await page.waitForFunction((n) => Number(document.querySelector("#chart").dataset.points) > n, before);
  await page.waitForFunction(() => /^Finished/.test(document.querySelector("#chart-status").textContent),
    null, { timeout: 120000 });
  const status = await page.textContent("#chart-status");
  const epochs = Number(status.match(/after (\d+) epochs/)[1]);
  assert.equal(await points(), epochs, `one point per epoch, none missing or twice (${status})`);
  const valLine = await page.$eval("#chart polyline.val", (p) => p.getAttribute("points").split(" ").length);
  assert.equal(valLine, epochs, "the validation curve too");

  // 6. A reload replays the whole history into the curve.
  await page.reload();
  await page.fill("#token", TOKEN);
  await page.press("#token", "Enter");
  await page.waitForSelector("#jobs tbody tr");
  await page.click("#jobs tbody tr:first-child button");
  await page.waitForFunction(() => /^Finished/.test(document.querySelector("#chart-status").textContent));
  assert.equal(await points(), epochs, "replayed after reload");
  assert.match(await page.textContent("#models"), /digits[\s\S]*v1/);

  // 7. Predict two rows of the training data; labels shown.
  const rows = readFileSync(join(root, "datasets/digits.csv"), "utf8").split("\n").slice(1, 3);
  await page.waitForFunction(() => [...document.querySelectorAll("#predict-model option")].some((o) => o.value === "digits"));
  await page.selectOption("#predict-model", "digits");
  await page.fill("#predict-rows", rows.map((r) => r.split(",").slice(1).join(", ")).join("\n"));
  await page.click("#predict-rows-button");
  await page.waitForSelector("#predictions:not([hidden])");
  const cells = await page.$$eval("#predictions tbody tr", (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
  assert.equal(cells.length, 2);
  assert.deepEqual(cells.map((c) => c[1]), rows.map((r) => r.split(",")[0]), "training rows are predicted right");
  assert.equal(cells[0][2].split(",").length, 10, "ten outputs");

  // 7b. A job started elsewhere (another client of the API) appears with its live curve.
  const other = await fetch(`${base}/v1/models/digits/train`, {
    method: "POST",
    headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify({ dataset_id: (await (await fetch(`${base}/v1/datasets`, {
      headers: { Authorization: `Bearer ${TOKEN}` } })).json()).datasets.find((d) => d.name === "digits").id,
    epochs: 5000, batch_size: 1, learning_rate: 0.001 }),
  }).then((r) => r.json());
  await page.waitForFunction((id) => document.querySelector("#chart-title").textContent.includes(id.slice(0, 8)),
    other.id, { timeout: 20000 });
  await page.waitForFunction(() => Number(document.querySelector("#chart").dataset.points) > 2);
  // Cancel it (through the API, as its client would): the page says how it ended.
  await fetch(`${base}/v1/jobs/${other.id}/cancel`, { method: "POST", headers: { Authorization: `Bearer ${TOKEN}` } });
  await page.waitForFunction(() => /^Ended canceled/.test(document.querySelector("#chart-status").textContent));

  // 8. Errors in plain words: the page's own check, and the API's.
  await page.fill("#predict-rows", "one, two");
  await page.click("#predict-rows-button");
  await page.waitForFunction(() => !document.querySelector("#notice").hidden);
  assert.equal(await page.textContent("#notice"), "Row 1 is not a list of numbers.");
  await page.fill("#predict-rows", "1, 2, 3");
  await page.click("#predict-rows-button");
  await page.waitForFunction(() => /64 inputs/.test(document.querySelector("#notice").textContent));
  assert.equal(await page.textContent("#notice"), "Has 3 values but the model takes 64 inputs (inputs[0]).");

  // 9. A real table: titanic's text columns and empty ages. Choosing the file shows the
  // column types detected before anything is sent; the name column is set to be ignored;
  // the stored dataset's columns are shown as the server read them.
  await page.setInputFiles("#csv-file", join(root, "datasets/titanic.csv"));
  await page.waitForSelector("#csv-columns-wrap:not([hidden])");
  await page.selectOption("#csv-target", "survived");
  const detected = await page.$$eval("#csv-columns tbody tr", (trs) => Object.fromEntries(trs.map((tr) => [tr.cells[0].textContent, tr.cells[1].textContent])));
  assert.deepEqual(Object.keys(detected), ["name", "sex", "age", "class", "survived"]);
  assert.match(detected.name, /^categorical/);
  assert.match(detected.sex, /^categorical/);
  assert.equal(detected.age, "numeric");
  assert.match(detected.class, /^categorical/);
  await page.selectOption('#csv-columns select[data-column="name"]', "ignore");
  await page.click("#upload-form button[type=submit]");
  await page.waitForFunction(() => /Uploaded titanic/.test(document.querySelector("#notice").textContent));
  assert.match(await page.textContent("#notice"), /Uploaded titanic: 1309 rows, 3 inputs/);
  const stored = await page.$$eval("#dataset-columns tbody tr", (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
  assert.deepEqual(stored.map((r) => r[0]), ["sex", "age", "class", "survived (target)"]);
  assert.deepEqual(stored.map((r) => r[1]), ["categorical", "numeric", "categorical", "categorical"]);
  assert.ok(Number(stored[1][2]) > 200, `age has missing cells: ${stored[1]}`);
  assert.match(stored[2][3], /3 levels: 3rd, 1st, 2nd/);
  assert.match(await page.textContent("#dataset-columns caption"), /ignored: name/);

  // 10. Train on it from the page (no input width to compute), then predict one record from
  // the record form: a field per feature, dropdowns of the levels for the categorical ones.
  await page.fill("#model-name", "titanic");
  await page.fill("#hidden", "8 relu");
  await page.fill("#epochs", "20");
  await page.fill("#batch", "32");
  await page.fill("#lr", "0.01");
  await page.click("#train-form button[type=submit]");
  await page.waitForFunction(() => /^Finished: version 1 of titanic/.test(document.querySelector("#chart-status").textContent),
    null, { timeout: 120000 });
  await page.waitForFunction(() => [...document.querySelectorAll("#predict-model option")].some((o) => o.value === "titanic"));
  await page.selectOption("#predict-model", "titanic");
  await page.waitForSelector('#record-fields select[data-feature="sex"]');
  const fields = await page.$$eval("#record-fields [data-feature]", (els) => els.map((e) => [e.dataset.feature, e.tagName.toLowerCase(),
    e.tagName === "SELECT" ? [...e.options].map((o) => o.value) : e.type]));
  assert.deepEqual(fields, [
    ["sex", "select", ["", "female", "male"]],
    ["age", "input", "number"],
    ["class", "select", ["", "1st", "2nd", "3rd"]],
  ]);
  const unlabelledRecord = await page.$$eval("#record-fields input, #record-fields select", (els) => els.filter((e) => e.labels.length === 0).map((e) => e.id));
  assert.deepEqual(unlabelledRecord, [], "every record field has a label");
  await page.selectOption('#record-fields [data-feature="sex"]', "female");
  await page.fill('#record-fields [data-feature="age"]', "29");
  await page.selectOption('#record-fields [data-feature="class"]', "1st");
  await page.click("#predict-record-button");
  await page.waitForFunction(() => /titanic/.test(document.querySelector("#predictions caption").textContent));
  const shown = await page.$$eval("#predictions tbody tr", (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
  const api = await fetch(`${base}/v1/models/titanic/predict`, {
    method: "POST",
    headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify({ records: [{ sex: "female", age: 29, class: "1st" }] }),
  }).then((r) => r.json());
  assert.equal(shown.length, 1);
  assert.equal(shown[0][1], String(api.labels[0]), "the page shows what the API predicts for that record");
  assert.equal(shown[0][2], `no: ${api.probabilities[0].no.toFixed(3)}, yes: ${api.probabilities[0].yes.toFixed(3)}`, "probabilities by label");
  // An empty age is a missing value (imputed), not an error; no feature at all is.
  await page.fill('#record-fields [data-feature="age"]', "");
  await page.$eval("#predictions tbody", (b) => b.replaceChildren());
  await page.click("#predict-record-button");
  await page.waitForSelector("#predictions tbody tr");
  assert.ok(await page.isHidden("#notice"), "no error for a missing age");
  for (const f of ["sex", "class"]) await page.selectOption(`#record-fields [data-feature="${f}"]`, "");
  await page.click("#predict-record-button");
  await page.waitForFunction(() => !document.querySelector("#notice").hidden);
  assert.equal(await page.textContent("#notice"), "Fill in at least one feature.");
  await page.screenshot({ path: shot, fullPage: true });

  // 11. Phone width: nothing scrolls sideways.
  await page.setViewportSize({ width: 360, height: 800 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 0) {
    const wide = await page.evaluate(() => [...document.querySelectorAll("body *")]
      .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 0.5)
      .map((e) => `${e.tagName.toLowerCase()}#${e.id}.${e.className} right=${Math.round(e.getBoundingClientRect().right)}`)
      .slice(0, 15));
    console.error("too wide:", wide);
  }
  assert.ok(overflow <= 0, `no horizontal scrolling at 360 px (${overflow} px too wide)`);

  assert.deepEqual(pageErrors, [], "no script errors");
  console.log(`dashboard: ok (curve grew through ${growth.join(", ")} points; ${epochs} epochs; screenshot ${shot})`);
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await browser.close();
  server.kill("SIGTERM");
  rmSync(dataDir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
