// Browser test of the dashboard (GET /dashboard) against a running hotfeed service, in Debian's
// headless Chromium driven by playwright-core. A plain node script: exits 0 when every step
// passed, 1 otherwise (2 on bad settings). scripts/browser-test.sh installs what it needs and
// runs it, alone or as part of a whole scenario with load and a killed master.
//
// Environment:
//   HOTFEED_URL     the service (default http://127.0.0.1:8080)
//   SCREENSHOT_DIR  where the PNGs go (default docs/img; a relative path is taken from the repo root)
//   EXPECT_HOT=1    also step "hot": some node turns hot and pages/s > 0 within 15 s (the caller
//                   runs load meanwhile); screenshot dashboard-hot.png
//   EXPECT_KILLED=<host:port>   also step "killed": within 30 s the dashboard shows that master
//                   is gone: Redis "degraded"/"down", or its card failing or missing, or its
//                   replica promoted to master; screenshot dashboard-killed.png
//   EXPECT_PROMOTED=<host:port> the replica of the killed master, as the caller saw it before the
//                   kill (else taken from the stats, which no longer say once the failover is done)
//   CHROMIUM        the browser binary (default /usr/bin/chromium)
//
// Every step fails the run on any console error or warning and on any uncaught page error.

import { chromium } from "playwright-core";
import { mkdtemp, mkdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const BASE = (process.env.HOTFEED_URL || "http://127.0.0.1:8080").replace(/\/+$/, "");
const SHOTS = path.resolve(REPO, process.env.SCREENSHOT_DIR || "docs/img");
const EXPECT_HOT = process.env.EXPECT_HOT === "1";
const EXPECT_KILLED = (process.env.EXPECT_KILLED || "").trim();
const EXPECT_PROMOTED = (process.env.EXPECT_PROMOTED || "").trim();
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const STATS = BASE + "/api/v1/admin/stats";

const log = (...a) => console.log("browser-test:", ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class StepError extends Error {}

/** Polls `probe` (async, returns a truthy value when done) every 200 ms until `ms` pass. */
async function waitFor(what, ms, probe) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      const why = last instanceof Error ? ": " + last.message : "";
      throw new StepError(`timed out after ${ms / 1000} s waiting for ${what}${why}`);
    }
    await sleep(200);
  }
}

async function fetchStats() {
  const res = await fetch(STATS, { signal: AbortSignal.timeout(5000), headers: { accept: "application/json" } });
  if (!res.ok) throw new Error(`GET ${STATS}: HTTP ${res.status}`);
  return res.json();
}

function nodesOf(stats) {
  return (Array.isArray(stats?.nodes) ? stats.nodes : []).filter((n) => n && typeof n.node === "string");
}

async function main() {
  if (EXPECT_KILLED && !/^[^\s:]+:\d+$/.test(EXPECT_KILLED)) {
    console.error(`browser-test: EXPECT_KILLED must be host:port (got '${EXPECT_KILLED}')`);
    return 2;
  }
  await mkdir(SHOTS, { recursive: true });
  const profile = await mkdtemp(path.join(tmpdir(), "hotfeed-chromium-"));
  const problems = []; // console errors and warnings, page errors
  const results = [];
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
      ],
      viewport: { width: 1280, height: 900 },
      timeout: 60000,
    });
    const page = context.pages()[0] || (await context.newPage());
    page.on("console", (msg) => {
      const type = msg.type();
      if (type === "error" || type === "warning") {
        const loc = msg.location();
        problems.push(`console ${type}: ${msg.text()}${loc && loc.url ? ` (${loc.url}:${loc.lineNumber})` : ""}`);
      }
    });
    page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));

    const byTestId = (id) => page.locator(`[data-testid="${id}"]`);
    const clean = () => {
      if (problems.length) throw new StepError(`console errors/warnings or page errors:\n    ${problems.join("\n    ")}`);
    };

    async function step(name, fn) {
      const started = Date.now();
      try {
        await fn();
        clean();
        results.push({ name, ok: true });
        log(`PASS ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
      } catch (e) {
        results.push({ name, ok: false });
        log(`FAIL ${name}: ${e instanceof StepError ? e.message : e.stack || e}`);
        await page.screenshot({ path: path.join(SHOTS, `failed-${name}.png`) }).catch(() => {});
        throw e;
      }
    }

    // ---------------------------------------------------------------------------------------
    await step("loads", async () => {
      const res = await page.goto(BASE + "/dashboard", { waitUntil: "load", timeout: 60000 });
      if (!res || !res.ok()) throw new StepError(`GET /dashboard: HTTP ${res ? res.status() : "no response"}`);
      // Live updates: the stamp changes on every successful poll; two changes = two polls.
      let last = await byTestId("updated-at").textContent();
      let changes = 0;
      await waitFor("updated-at to change twice (the page polls the stats once a second)", 60000, async () => {
        const now = await byTestId("updated-at").textContent();
        if (now !== last) {
          changes += 1;
          last = now;
        }
        return changes >= 2;
      });
      const state = await byTestId("health").getAttribute("data-state");
      if (!["healthy", "degraded", "down"].includes(state)) throw new StepError(`health banner in state '${state}' after two polls`);
      // Every node the service reports has its card (fetched again if the topology moved meanwhile).
      let missing = [];
      await waitFor("a card for every node of the stats", 60000, async () => {
        const nodes = nodesOf(await fetchStats()).map((n) => n.node);
        missing = [];
        for (const n of nodes) if ((await byTestId(`node-${n}`).count()) !== 1) missing.push(n);
        if (missing.length) throw new Error(`no card for ${missing.join(", ")}`);
        return true;
      });
      for (const id of ["hot-users", "hot-keys", "pages-per-sec", "p99"]) {
        if ((await byTestId(id).count()) !== 1) throw new StepError(`no element data-testid="${id}"`);
      }
      // One more poll, so an error in rendering a second reply shows before the screenshot.
      const before = await byTestId("updated-at").textContent();
      await waitFor("one more poll", 60000, async () => (await byTestId("updated-at").textContent()) !== before);
      await page.screenshot({ path: path.join(SHOTS, "dashboard.png") });
      log(`health ${state}; ${await page.locator('[data-testid^="node-"]').count()} node cards; screenshot dashboard.png`);
    });

    // ---------------------------------------------------------------------------------------
    if (EXPECT_HOT) {
      await step("hot", async () => {
        const hot = await waitFor("a node marked hot (data-hot=true) and pages/s > 0", 60000, async () => {
          const hotNodes = await page.locator('[data-testid^="node-"][data-hot="true"]').evaluateAll((els) => els.map((e) => e.dataset.testid));
          const pps = Number((await byTestId("pages-per-sec").getAttribute("data-value")) || "0");
          return hotNodes.length > 0 && pps > 0 ? { hotNodes, pps } : null;
        });
        await sleep(1500); // let the chart and tables fill a little
        await page.screenshot({ path: path.join(SHOTS, "dashboard-hot.png") });
        log(`hot: ${hot.hotNodes.join(", ")}; ${hot.pps} pages/s; screenshot dashboard-hot.png`);
      });
    }

    // ---------------------------------------------------------------------------------------
    if (EXPECT_KILLED) {
      await step("killed", async () => {
        let replica = EXPECT_PROMOTED;
        if (!replica) {
          const r = nodesOf(await fetchStats().catch(() => ({}))).find((n) => n.master === EXPECT_KILLED);
          replica = r ? r.node : "";
        }
        const seen = await waitFor(`the dashboard to show ${EXPECT_KILLED} down (Redis degraded, its card failing, or ${replica || "its replica"} promoted)`, 90000, async () => {
          const redis = await byTestId("health").getAttribute("data-redis");
          if (redis === "degraded" || redis === "down") return `health redis ${redis}`;
          const card = byTestId(`node-${EXPECT_KILLED}`);
          if ((await card.count()) === 1) {
            const s = await card.getAttribute("data-state");
            if (s === "failing" || s === "missing") return `card of ${EXPECT_KILLED} ${s}`;
          }
          if (replica) {
            const r = byTestId(`node-${replica}`);
            if ((await r.count()) === 1 && (await r.getAttribute("data-role")) === "master") return `${replica} promoted to master`;
          }
          return null;
        });
        await sleep(1000);
        await page.screenshot({ path: path.join(SHOTS, "dashboard-killed.png") });
        log(`killed: ${seen}; screenshot dashboard-killed.png`);
      });
    }
  } catch (e) {
    if (!(e instanceof StepError) && !results.some((r) => !r.ok)) log(`error: ${e.stack || e}`);
  } finally {
    if (context) await context.close().catch(() => {});
    await rm(profile, { recursive: true, force: true }).catch(() => {});
  }
  const failed = results.filter((r) => !r.ok).length;
  const wanted = 1 + (EXPECT_HOT ? 1 : 0) + (EXPECT_KILLED ? 1 : 0);
  const ok = failed === 0 && results.length === wanted;
  log(`${ok ? "ok" : "FAILED"}: ${results.map((r) => `${r.name} ${r.ok ? "pass" : "FAIL"}`).join(", ") || "no step ran"}; screenshots in ${SHOTS}`);
  return ok ? 0 : 1;
}

process.exitCode = await main();
