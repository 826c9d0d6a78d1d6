// The dashboard in a real headless Chromium (Debian's /usr/bin/chromium) against the real
// binary, with authentication on:
//   node tests/browser/dashboard.mjs [path/to/mlpd] [screenshot.png]
// Checks: the page loads with no console errors; a token entered once unlocks it; a CSV upload
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
  await page.click("#train-form button[type=submit]");
  await page.waitForSelector("#chart-panel:not([hidden])");
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
      headers: { Authorization: `Bearer ${TOKEN}` } })).json()).datasets[0].id,
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
