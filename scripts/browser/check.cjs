// CI check of issue 18 in a real browser (Debian's Chromium, driven by playwright-core): a tiny
// real sweep runs with `--serve`; the live page must show the current run, its image (decoded,
// not blank), a loss and the queue, updating while the sweep runs; once it ends, the static
// index.html, opened from the file system, must list the runs with the losses of summary.csv,
// open a run's image and compare two runs side by side. Screenshots of both pages go to
// docs/images/ (the README shows them).
//
//   NODE_PATH=/path/to/node_modules node scripts/browser/check.cjs RUNNER
"use strict";
const { chromium } = require("playwright-core");
const { spawn } = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");

const root = path.resolve(__dirname, "..", "..");
const runner = path.resolve(process.argv[2] || "target/debug/runner");
const shots = path.join(root, "docs", "images");
const fail = (msg) => { console.error("browser check: " + msg); process.exit(1); };
const ok = (cond, msg) => { if (!cond) fail(msg); };

// Two runs of Tübingen in the style of The Starry Night, small enough for CI.
const work = fs.mkdtempSync(path.join(os.tmpdir(), "gatys-browser-"));
fs.writeFileSync(path.join(work, "live.toml"), `
name = "live_demo"
description = "Tübingen × The Starry Night at 160 px, two style weights (the browser check)."
[defaults]
content = "tubingen"
style = "starry_night"
size = 160
iterations = 60
[sweep]
style_weight = [1e3, 1e5]
`);

// Is the <img> decoded, and not a flat image? (Same origin: its pixels can be read.)
async function imageStats(page, selector) {
  return page.$eval(selector, async (img) => {
    if (!img.complete) await new Promise((r) => { img.onload = r; img.onerror = r; });
    const c = document.createElement("canvas");
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    if (!c.width) return { width: 0, std: 0 };
    const g = c.getContext("2d"); g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let s = 0, s2 = 0, n = 0;
    for (let i = 0; i < d.length; i += 4) { const v = (d[i] + d[i + 1] + d[i + 2]) / 3; s += v; s2 += v * v; n++; }
    const mean = s / n;
    return { width: c.width, height: c.height, std: Math.sqrt(Math.max(0, s2 / n - mean * mean)) };
  });
}

async function main() {
  const t0 = Date.now();
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--allow-file-access-from-files"],
  });
  const sweep = spawn(runner, ["live.toml", "--out", "res", "--serve", "0", "--preview-every", "5"], { cwd: work });
  let log = "";
  const url = await new Promise((resolve, reject) => {
    sweep.stderr.on("data", (b) => {
      log += b;
      const m = /live view: (http:\/\/127\.0\.0\.1:\d+\/)/.exec(log);
      if (m) resolve(m[1]);
    });
    sweep.on("exit", (code) => reject(new Error(`runner exited (${code}) before serving:\n${log}`)));
  });
  const exited = new Promise((r) => sweep.on("exit", r));

  // The live page: the current run with its image, a loss and the queue, updating.
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(url);
  await page.waitForSelector("#current-image", { timeout: 120000 });
  await page.waitForFunction(() => document.body.classList.contains("is-live"), null, { timeout: 60000 });
  const first = await page.textContent("#current");
  const m = [null, await page.textContent("#current-iteration"), await page.textContent("#current-loss")];
  ok(Number(m[1]) > 0 && Number(m[2]) > 0 && first.includes("of 60"), `the live page shows no iteration and loss: ${first}`);
  const names = await page.$$eval("#runs tbody tr", (rows) => rows.map((r) => r.dataset.run));
  const planned = require("child_process").execFileSync(runner, ["live.toml", "--list"], { cwd: work }).toString().trim().split("\n");
  ok(planned.length === 2 && names.join() === planned.join(), `the queue lists ${names}, the plan ${planned}`);
  const live = await imageStats(page, "#current-image");
  ok(live.width === 160 && live.std > 5, `the live image is missing or blank: ${JSON.stringify(live)}`);
  await page.waitForFunction((it) => Number(document.querySelector("#current-iteration")?.textContent) > it,
    Number(m[1]), { timeout: 60000 });
  await page.screenshot({ path: path.join(shots, "live.png") });
  console.log(`browser check: live page ${url} shows run, iteration ${m[1]} → later, loss ${m[2]}, image 160 px (std ${live.std.toFixed(1)})`);

  // The run goes on whether or not the page stays.
  await page.close();
  const code = await exited;
  ok(code === 0, `the sweep failed (${code}):\n${log}`);

  // The static report from the file system.
  const dir = path.join(work, "res", "live_demo");
  const csv = fs.readFileSync(path.join(dir, "summary.csv"), "utf8").trim().split("\n").map((l) => l.split(","));
  const col = csv[0].indexOf("final_total");
  const report = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const requests = [];
  report.on("request", (r) => requests.push(r.url()));
  await report.goto("file://" + path.join(dir, "index.html"));
  const rows = await report.$$eval("#runs tbody tr", (rs) => rs.map((r) => [...r.cells].map((c) => c.textContent)));
  ok(rows.length === 2, `the report has ${rows.length} rows`);
  for (const [k, line] of csv.slice(1).entries()) {
    const cells = rows.find((r) => r[1] === line[0]);
    ok(cells, `run ${line[0]} is not in the report`);
    ok(cells.includes("ok"), `run ${line[0]} is not ok in the report: ${cells}`);
    const shown = cells.map(Number).filter((v) => v > 0 && Math.abs(v / Number(line[col]) - 1) < 1e-3);
    ok(shown.length > 0, `final total ${line[col]} of ${line[0]} is not in its row: ${cells}`);
  }
  // Sorting by the final total, descending then ascending.
  await report.click("th[data-key=final_total]");
  await report.click("th[data-key=final_total]");
  const sorted = await report.$$eval("#runs tbody tr", (rs) => rs.map((r) => r.dataset.run));
  ok(sorted.length === 2, "sorting lost rows");
  // A run a click away: its image decodes and is not blank.
  await report.click("#runs tbody tr:first-child td:nth-child(2)");
  await report.waitForSelector("#detail .pane img.out");
  const img = await imageStats(report, "#detail .pane img.out");
  ok(img.width === 160 && img.std > 5, `the run's image is missing or blank: ${JSON.stringify(img)}`);
  // Two runs side by side.
  // (each click re-renders the table: select afresh)
  await report.click("#runs tbody tr:nth-child(1) input[type=checkbox]");
  await report.click("#runs tbody tr:nth-child(2) input[type=checkbox]");
  const panes = await report.$$eval("#detail .pane", (ps) => ps.length);
  ok(panes === 3, `the comparison shows ${panes} panes, expected 2 runs and their curves`);
  const diff = await report.$$eval("#detail pre .diff", (d) => d.map((x) => x.textContent));
  ok(diff.some((l) => l.startsWith("style_weight")), `the compared parameters do not mark style_weight: ${diff}`);
  const external = requests.filter((u) => !u.startsWith("file://"));
  ok(external.length === 0, `the report fetched from elsewhere: ${external}`);
  await report.screenshot({ path: path.join(shots, "report.png"), fullPage: false });
  console.log(`browser check: report lists ${rows.length} runs with summary.csv's losses, sorts, opens a run (image std ${img.std.toFixed(1)}), compares two; nothing fetched from elsewhere`);
  await browser.close();
  fs.rmSync(work, { recursive: true, force: true });
  console.log(`browser check: passed in ${((Date.now() - t0) / 1000).toFixed(0)} s; screenshots in docs/images/live.png and report.png`);
}

main().catch((e) => fail(e.stack || String(e)));
