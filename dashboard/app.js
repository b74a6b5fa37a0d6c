// hotfeed dashboard: polls GET /api/v1/admin/stats once a second and renders it.
// Vanilla JS, no dependencies, no network but that one same-origin URL. Every field of the reply
// may be null or absent; the DOM is built with createElement only (no innerHTML), so key names
// and node names are never parsed as markup and a strict CSP needs no 'unsafe-inline'.
(function () {
  "use strict";

  const STATS_URL = "/api/v1/admin/stats";
  const POLL_MS = 1000;
  const FETCH_TIMEOUT_MS = 2500;
  const HISTORY_MS = 60000;
  const SLOTS = 16384;
  const TABLE_ROWS = 8;
  const SVG_NS = "http://www.w3.org/2000/svg";
  // Colours of the masters, given in the order nodes are first seen and kept for the session.
  const PALETTE = ["#58a6ff", "#bc8cff", "#3fb950", "#39c5cf", "#f778ba", "#e3b341", "#a5d6ff", "#7ee787"];
  const HOT = "#ff7a45";
  const TIERS = [
    { key: "hit_l1", label: "HIT-L1", color: "#7ee787" },
    { key: "hit", label: "HIT", color: "#3fb950" },
    { key: "partial", label: "PARTIAL", color: "#e3b341" },
    { key: "miss", label: "MISS", color: "#f85149" },
    { key: "bypass", label: "BYPASS", color: "#8a96a6" },
  ];

  const nf0 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const nf1 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  const nf2 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });

  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------------------------------
  // Small helpers

  function num(v) {
    return typeof v === "number" && Number.isFinite(v) ? v : null;
  }
  function arr(v) {
    return Array.isArray(v) ? v : [];
  }
  function obj(v) {
    return v !== null && typeof v === "object" && !Array.isArray(v) ? v : {};
  }
  function str(v) {
    return typeof v === "string" ? v : v === null || v === undefined ? "" : String(v);
  }
  /** A rate or count for display: "–" when unknown, fewer decimals as it grows. */
  function fmt(v) {
    const n = num(v);
    if (n === null) return "–";
    const a = Math.abs(n);
    if (a >= 100) return nf0.format(n);
    if (a >= 10) return nf1.format(n);
    return nf2.format(n);
  }
  function fmtInt(v) {
    const n = num(v);
    return n === null ? "–" : nf0.format(n);
  }
  function fmtMs(v) {
    const n = num(v);
    if (n === null) return "–";
    return n >= 100 ? nf0.format(n) : n >= 10 ? nf1.format(n) : nf2.format(n);
  }
  function fmtPct(v) {
    const n = num(v);
    return n === null ? "–" : nf1.format(n * 100) + " %";
  }
  function fmtBytes(v) {
    const n = num(v);
    if (n === null) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let x = n;
    let i = 0;
    while (x >= 1024 && i < units.length - 1) {
      x /= 1024;
      i += 1;
    }
    return (i === 0 ? nf0.format(x) : nf1.format(x)) + " " + units[i];
  }
  function fmtUptime(v) {
    const s = num(v);
    if (s === null) return "";
    if (s < 60) return Math.floor(s) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (Math.floor(s) % 60) + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + (Math.floor(s / 60) % 60) + " min";
    return Math.floor(s / 86400) + " d " + (Math.floor(s / 3600) % 24) + " h";
  }
  function pad(n, w) {
    return String(n).padStart(w, "0");
  }
  function clock(d) {
    return pad(d.getHours(), 2) + ":" + pad(d.getMinutes(), 2) + ":" + pad(d.getSeconds(), 2) + "." + pad(d.getMilliseconds(), 3);
  }

  /** An HTML element with a class, text and children. */
  function el(tag, cls, text, children) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null && text !== "") e.textContent = text;
    if (children) for (const c of children) if (c) e.appendChild(c);
    return e;
  }
  /** An SVG element with attributes. */
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG_NS, tag);
    if (attrs) for (const k of Object.keys(attrs)) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function setText(id, text) {
    const e = $(id);
    if (e && e.textContent !== text) e.textContent = text;
  }

  /** "0-5460, 10923-16383" from [[0, 5460], [10923, 16383]]; a lone slot is one number. */
  function slotText(ranges) {
    if (ranges.length === 0) return "no slots";
    return ranges.map(([a, b]) => (a === b ? String(a) : a + "-" + b)).join(", ");
  }
  /** The valid [start, end] pairs of a node's slots, sorted. */
  function slotRanges(v) {
    const out = [];
    for (const r of arr(v)) {
      if (!Array.isArray(r) || r.length < 1) continue;
      const a = num(r[0]);
      const b = r.length > 1 ? num(r[1]) : a;
      if (a === null || b === null) continue;
      const lo = Math.max(0, Math.min(a, b));
      const hi = Math.min(SLOTS - 1, Math.max(a, b));
      if (lo <= hi) out.push([lo, hi]);
    }
    out.sort((x, y) => x[0] - y[0]);
    return out;
  }
  function slotCount(ranges) {
    return ranges.reduce((s, [a, b]) => s + (b - a + 1), 0);
  }

  // ------------------------------------------------------------------------------------------
  // State kept between polls

  const colors = new Map(); // node -> colour
  const cards = new Map(); // node -> card (elements of one node)
  const lastSeen = new Map(); // node -> { role, master, slots } of the last poll that listed it
  const history = new Map(); // master node -> [{ t, v }] commands/s
  let polls = 0;
  let lastOk = null;

  function colorOf(node) {
    if (!colors.has(node)) colors.set(node, PALETTE[colors.size % PALETTE.length]);
    return colors.get(node);
  }

  // ------------------------------------------------------------------------------------------
  // Health banner

  function renderHealth(stats, reachable) {
    const h = $("health");
    const text = h.querySelector(".health-text");
    const chips = h.querySelector(".health-chips");
    if (!reachable) {
      h.dataset.state = "unreachable";
      text.textContent = lastOk ? "service unreachable · showing data of " + clock(lastOk) : "service unreachable";
      chips.replaceChildren();
      return;
    }
    const health = obj(stats.health);
    const redis = str(health.redis) || "unknown";
    const pg = str(health.postgres) || "unknown";
    const l1 = str(health.l1) || "unknown";
    const problems = [];
    let state = "healthy";
    if (pg === "down") {
      problems.push("PostgreSQL down");
      state = "down";
    }
    if (redis === "down") {
      problems.push("Redis down · reads served by PostgreSQL");
      state = "down";
    } else if (redis === "degraded") {
      problems.push("Redis degraded");
      if (state !== "down") state = "degraded";
    }
    if (l1 === "down") {
      problems.push("L1 channel down");
      if (state === "healthy") state = "degraded";
    }
    h.dataset.state = state;
    h.dataset.redis = redis;
    h.dataset.postgres = pg;
    h.dataset.l1 = l1;
    text.textContent = problems.length ? problems.join(" · ") : "healthy";
    const chip = (label, value, good, warn) => {
      const cls = value === good ? "ok" : warn.includes(value) ? "warn" : value === "off" || value === "unknown" ? "" : "bad";
      return el("span", "chip " + cls, label + " " + value);
    };
    chips.replaceChildren(
      chip("redis", redis, "ok", ["degraded"]),
      chip("pg", pg, "ok", []),
      chip("l1", l1, "listening", []),
    );
  }

  // ------------------------------------------------------------------------------------------
  // Key figures

  function setKpi(id, value, text) {
    const e = $(id);
    e.dataset.value = value === null ? "" : String(value);
    if (e.textContent !== text) e.textContent = text;
  }

  function renderKpis(stats) {
    const pages = obj(stats.pages);
    const pg = obj(stats.postgres);
    const cache = obj(stats.cache);
    const feed = obj(stats.feed);
    setKpi("pages-per-sec", num(pages.per_sec), fmt(pages.per_sec));
    setKpi("p99", num(pages.p99_ms), fmtMs(pages.p99_ms));
    setText("p50", fmtMs(pages.p50_ms));
    const interval = num(stats.interval_secs);
    setText("pages-foot", interval !== null ? "over the last " + nf1.format(interval) + " s" : "");
    setText("pg-qps", fmt(pg.queries_per_sec));
    setText("pg-qpp", fmt(pg.queries_per_page));
    setText("cache-errors", fmt(cache.errors_per_sec));
    $("cache-errors").classList.toggle("bad", (num(cache.errors_per_sec) || 0) > 0);
    setText("reconnects", fmtInt(cache.reconnects));
    setText("l1-bytes", fmtBytes(cache.l1_bytes));
    setText("l1-entries", fmtInt(cache.l1_entries));
    const listening = $("l1-listening");
    const l = cache.l1_listening;
    listening.textContent = l === true ? "listening" : l === false ? "not listening" : "–";
    listening.className = "chip " + (l === true ? "ok" : l === false ? "warn" : "");
    listening.hidden = l !== true && l !== false;
    setText("fanout-lag", fmtMs(feed.fanout_lag_p99_ms));
    setText("fanouts", fmt(feed.fanouts_per_sec));

    const inst = obj(stats.instance);
    const parts = [];
    if (inst.version) parts.push("v" + str(inst.version));
    const up = fmtUptime(inst.uptime_secs);
    if (up) parts.push("up " + up);
    setText("instance", parts.length ? parts.join(" · ") : "hotfeed");
  }

  // ------------------------------------------------------------------------------------------
  // X-Cache stacked bar

  function renderXcache(stats) {
    const by = obj(obj(stats.pages).by_cache);
    const values = TIERS.map((t) => Math.max(0, num(by[t.key]) || 0));
    const total = values.reduce((a, b) => a + b, 0);
    const bar = $("xcache-bar");
    const legend = $("xcache-legend");
    const rects = [];
    let x = 0;
    TIERS.forEach((t, i) => {
      if (total <= 0 || values[i] <= 0) return;
      const w = (values[i] / total) * 1000;
      const r = svg("rect", { x: x.toFixed(2), y: 0, width: w.toFixed(2), height: 24, fill: t.color });
      r.appendChild(svg("title", null, t.label + " " + fmtPct(values[i] / total)));
      rects.push(r);
      x += w;
    });
    bar.replaceChildren(...rects);
    legend.replaceChildren(
      ...TIERS.map((t, i) => {
        const sw = el("span", "sw");
        sw.style.background = t.color;
        return el("span", null, null, [sw, document.createTextNode(t.label), el("b", null, total > 0 ? fmtPct(values[i] / total) : "–")]);
      }),
    );
  }

  // ------------------------------------------------------------------------------------------
  // Redis nodes

  function makeCard(node) {
    const root = el("div", "node");
    root.setAttribute("data-testid", "node-" + node);
    const name = el("span", "node-name", node);
    name.title = node;
    const badges = el("span", "node-badges");
    const head = el("div", "node-head", null, [name, badges]);
    const sub = el("div", "node-sub");
    const strip = svg("svg", { class: "strip", viewBox: "0 0 " + SLOTS + " 10", preserveAspectRatio: "none", role: "img" });
    const metric = (label, rt) => {
      const fill = el("div", rt ? "fill rt" : "fill");
      const value = el("span", "m-value", "–");
      const row = el("div", "metric", null, [el("span", "m-label", label), el("div", "track", null, [fill]), value]);
      return { row, fill, value };
    };
    const cmd = metric("commands/s", false);
    const rt = metric("round trips/s", true);
    const errors = el("div", "node-errors");
    root.append(head, sub, strip, cmd.row, rt.row, errors);
    return { root, badges, sub, strip, cmd, rt, errors, key: "" };
  }

  function renderStrip(strip, ranges, color, muted) {
    const parts = [svg("rect", { x: 0, y: 0, width: SLOTS, height: 10, fill: "#0f141b" })];
    for (const [a, b] of ranges) {
      parts.push(svg("rect", { x: a, y: 0, width: b - a + 1, height: 10, fill: color, "fill-opacity": muted ? 0.35 : 0.95 }));
    }
    strip.replaceChildren(...parts);
    strip.setAttribute("aria-label", ranges.length ? "slots " + slotText(ranges) : "no slots");
  }

  /** Normalised view of one entry of `nodes`, or null when it names no node. */
  function readNode(n) {
    const o = obj(n);
    const node = str(o.node);
    if (!node) return null;
    const roleRaw = str(o.role).toLowerCase();
    const role = roleRaw === "slave" ? "replica" : roleRaw || "unknown";
    const status = str(o.status || o.state).toLowerCase();
    return {
      node,
      role,
      master: str(o.master),
      slots: slotRanges(o.slots),
      cmd: num(o.commands_per_sec),
      rt: num(o.round_trips_per_sec),
      err: num(o.errors_per_sec),
      hot: o.hot === true,
      // The service's circuit breaker for the node: closed, open or half_open ("" if none).
      breaker: str(o.breaker).toLowerCase(),
      status,
      missing: false,
    };
  }

  function renderNodes(stats, now) {
    const list = [];
    const seen = new Set();
    for (const raw of arr(stats.nodes)) {
      const n = readNode(raw);
      if (!n || seen.has(n.node)) continue;
      seen.add(n.node);
      list.push(n);
      lastSeen.set(n.node, { role: n.role, master: n.master, slots: n.slots });
    }
    // A node listed before and absent now is shown as missing (killed, or removed from the
    // cluster) until the page is reloaded: that is the moment a workshop wants to see.
    for (const [node, last] of lastSeen) {
      if (seen.has(node)) continue;
      list.push({ node, role: last.role, master: last.master, slots: last.slots, cmd: null, rt: null, err: null, hot: false, breaker: "", status: "missing", missing: true });
    }

    const maxCmd = Math.max(1, ...list.map((n) => n.cmd || 0));
    const maxRt = Math.max(1, ...list.map((n) => n.rt || 0));
    const byNode = new Map(list.map((n) => [n.node, n]));

    // Columns: each master (by its first slot) with its replicas under it; then the rest.
    const masters = list.filter((n) => n.role === "master" && !n.missing);
    masters.sort((a, b) => (a.slots.length ? a.slots[0][0] : SLOTS) - (b.slots.length ? b.slots[0][0] : SLOTS) || a.node.localeCompare(b.node));
    const placed = new Set();
    const columns = [];
    for (const m of masters) {
      const col = [m];
      placed.add(m.node);
      for (const r of list) {
        if (r.role !== "master" && r.master === m.node && !placed.has(r.node)) {
          col.push(r);
          placed.add(r.node);
        }
      }
      columns.push(col);
    }
    for (const n of list) {
      if (placed.has(n.node)) continue;
      const col = [n];
      placed.add(n.node);
      for (const r of list) {
        if (!placed.has(r.node) && r.role !== "master" && r.master === n.node) {
          col.push(r);
          placed.add(r.node);
        }
      }
      columns.push(col);
    }

    const colEls = [];
    for (const col of columns) {
      const colEl = el("div", "node-col");
      for (const n of col) {
        let c = cards.get(n.node);
        if (!c) {
          c = makeCard(n.node);
          cards.set(n.node, c);
        }
        updateCard(c, n, byNode, maxCmd, maxRt);
        colEl.appendChild(c.root);
      }
      colEls.push(colEl);
    }
    $("nodes").replaceChildren(...colEls);
    if (list.length === 0) {
      $("nodes").replaceChildren(el("div", "panel-note", "no Redis nodes reported (CACHE=off, or the cluster is not known yet)"));
    }

    const nMasters = masters.length;
    const nReplicas = list.filter((n) => n.role === "replica" && !n.missing).length;
    const covered = masters.reduce((s, m) => s + slotCount(m.slots), 0);
    const failing = list.filter((n) => n.missing || (n.err || 0) > 0).length;
    let note = nMasters + " masters · " + nReplicas + " replicas · " + nf0.format(Math.min(covered, SLOTS)) + " / " + nf0.format(SLOTS) + " slots";
    if (failing) note += " · " + failing + " failing";
    setText("nodes-note", note);

    // Commands/s per master for the chart.
    for (const m of masters) {
      if (!history.has(m.node)) history.set(m.node, []);
      history.get(m.node).push({ t: now, v: m.cmd || 0 });
    }
    for (const [node, points] of history) {
      while (points.length && points[0].t < now - HISTORY_MS) points.shift();
      if (points.length === 0) history.delete(node);
    }
  }

  function updateCard(c, n, byNode, maxCmd, maxRt) {
    const failing = n.missing || (n.err || 0) > 0 || n.status === "down" || n.status === "fail" || n.status === "failed";
    const state = n.missing ? "missing" : failing ? "failing" : "ok";
    const masterOf = n.role !== "master" && n.master ? byNode.get(n.master) : null;
    const color = n.role === "master" ? colorOf(n.node) : n.master ? colorOf(n.master) : "#5b6675";
    c.root.style.setProperty("--node-color", color);
    c.root.dataset.role = n.role;
    c.root.dataset.hot = n.hot ? "true" : "false";
    c.root.dataset.state = state;
    c.root.dataset.master = n.master;
    c.root.dataset.breaker = n.breaker || "none";

    const badges = [el("span", "badge " + (n.role === "master" ? "master" : "replica"), n.role)];
    if (n.hot) badges.push(el("span", "badge hot", "HOT"));
    // Open: calls to the node fail at once (reads come from PostgreSQL); half-open: one probe call decides.
    if (n.breaker === "open") badges.push(el("span", "badge down", "breaker open"));
    else if (n.breaker === "half_open") badges.push(el("span", "badge warn", "probing"));
    if (n.missing) badges.push(el("span", "badge down", "gone"));
    else if (failing) badges.push(el("span", "badge down", n.status === "down" || n.status === "fail" ? "down" : "errors"));
    c.badges.replaceChildren(...badges);

    // Replicas hold no slots of their own: show their master's, muted.
    const shown = n.role === "master" ? n.slots : masterOf ? masterOf.slots : n.slots;
    const key = shown.map((r) => r.join("-")).join(",") + "|" + color + "|" + (n.role === "master");
    if (c.key !== key) {
      renderStrip(c.strip, shown, color, n.role !== "master");
      c.key = key;
    }
    let sub;
    if (n.missing) {
      sub = [el("span", null, "not in the last report · was " + n.role + (n.slots.length ? " of " + slotText(n.slots) : ""))];
    } else if (n.role === "master") {
      sub = [el("span", null, "slots "), el("span", "mono", slotText(n.slots)), el("span", null, n.slots.length ? " (" + nf0.format(slotCount(n.slots)) + ")" : "")];
    } else {
      sub = [el("span", null, "replica of "), el("span", "mono", n.master || "?")];
    }
    c.sub.replaceChildren(...sub);
    c.sub.title = c.sub.textContent;

    c.cmd.fill.style.width = ((100 * (n.cmd || 0)) / maxCmd).toFixed(1) + "%";
    c.cmd.value.textContent = fmt(n.cmd);
    c.rt.fill.style.width = ((100 * (n.rt || 0)) / maxRt).toFixed(1) + "%";
    c.rt.value.textContent = fmt(n.rt);
    c.errors.textContent = n.missing ? "" : (n.err || 0) > 0 ? fmt(n.err) + " errors/s" : "";
  }

  // ------------------------------------------------------------------------------------------
  // Chart: commands/s per master over the last 60 s

  function niceMax(v) {
    if (v <= 0) return 10;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function renderChart(now) {
    const W = 400, H = 210, L = 46, R = 10, T = 10, B = 24;
    const chart = $("chart");
    const nodes = [...history.keys()].sort();
    let max = 0;
    for (const n of nodes) for (const p of history.get(n)) max = Math.max(max, p.v);
    const top = niceMax(max * 1.1);
    const x = (t) => L + ((t - (now - HISTORY_MS)) / HISTORY_MS) * (W - L - R);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    const parts = [];
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      parts.push(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v).toFixed(1), y2: y(v).toFixed(1) }));
      parts.push(svg("text", { class: "axis", x: L - 6, y: (y(v) + 4).toFixed(1), "text-anchor": "end" }, fmt(v)));
    }
    for (const s of [60, 45, 30, 15, 0]) {
      parts.push(svg("text", { class: "axis", x: x(now - s * 1000).toFixed(1), y: H - 8, "text-anchor": s === 60 ? "start" : s === 0 ? "end" : "middle" }, s === 0 ? "now" : "-" + s + " s"));
    }
    let drawn = 0;
    for (const n of nodes) {
      const pts = history.get(n);
      if (pts.length === 0) continue;
      const card = cards.get(n);
      const hot = card && card.root.dataset.hot === "true";
      const d = pts.map((p) => x(p.t).toFixed(1) + "," + y(p.v).toFixed(1)).join(" ");
      if (pts.length === 1) {
        parts.push(svg("circle", { cx: x(pts[0].t).toFixed(1), cy: y(pts[0].v).toFixed(1), r: 3, fill: colorOf(n) }));
      } else {
        const line = svg("polyline", { class: "line", points: d, stroke: colorOf(n) });
        if (hot) line.setAttribute("stroke-width", "3.2");
        parts.push(line);
      }
      drawn += 1;
    }
    if (drawn === 0) {
      parts.push(svg("text", { class: "empty", x: (L + W - R) / 2, y: H / 2, "text-anchor": "middle" }, "no masters reported yet"));
    }
    chart.replaceChildren(...parts);

    $("chart-legend").replaceChildren(
      ...nodes.map((n) => {
        const sw = el("span", "sw");
        sw.style.background = colorOf(n);
        const pts = history.get(n);
        const last = pts.length ? pts[pts.length - 1].v : null;
        const card = cards.get(n);
        const hot = card && card.root.dataset.hot === "true";
        const label = el("span", null, null, [sw, document.createTextNode(n), el("b", null, fmt(last))]);
        if (hot) {
          const b = el("span", "badge hot", "HOT");
          b.style.marginLeft = "6px";
          label.appendChild(b);
        }
        return label;
      }),
    );
  }

  // ------------------------------------------------------------------------------------------
  // Hot users and keys

  function nodeCell(node) {
    const td = el("td");
    if (!node) {
      td.textContent = "–";
      return td;
    }
    const dot = el("span", "node-dot");
    const card = cards.get(node);
    const master = card ? card.root.dataset.role === "master" : false;
    dot.style.background = master || colors.has(node) ? colorOf(node) : "#5b6675";
    if (card && card.root.dataset.hot === "true") dot.style.boxShadow = "0 0 6px " + HOT;
    td.append(dot, document.createTextNode(node));
    return td;
  }

  function emptyRow(cols, text) {
    const td = el("td", "empty", text);
    td.colSpan = cols;
    return el("tr", null, null, [td]);
  }

  function renderHot(stats) {
    const hot = obj(stats.hot);
    const win = num(hot.window_secs);
    const note = win !== null ? "reads over the last " + nf0.format(win) + " s" : "";
    setText("hot-window", note);
    setText("hot-window-keys", note);

    const users = arr(hot.users).map(obj).filter((u) => u.user_id !== undefined && u.user_id !== null);
    users.sort((a, b) => (num(b.reads) || 0) - (num(a.reads) || 0));
    const uRows = users.slice(0, TABLE_ROWS).map((u) =>
      el("tr", null, null, [
        el("td", null, "user " + str(u.user_id)),
        el("td", "num", fmtInt(u.reads)),
        el("td", "num", fmtPct(u.list_hit_ratio)),
        nodeCell(str(u.node)),
      ]),
    );
    $("hot-users-body").replaceChildren(...(uRows.length ? uRows : [emptyRow(4, "no reads in the window")]));

    const keys = arr(hot.keys).map(obj).filter((k) => k.key !== undefined && k.key !== null);
    keys.sort((a, b) => (num(b.reads) || 0) - (num(a.reads) || 0));
    const kRows = keys.slice(0, TABLE_ROWS).map((k) => {
      const keyTd = el("td", "key", str(k.key));
      keyTd.title = str(k.key);
      return el("tr", null, null, [keyTd, el("td", null, str(k.kind) || "–"), el("td", "num", fmtInt(k.reads)), nodeCell(str(k.node))]);
    });
    $("hot-keys-body").replaceChildren(...(kRows.length ? kRows : [emptyRow(4, "no reads in the window")]));
  }

  // ------------------------------------------------------------------------------------------
  // Polling

  function render(stats) {
    const now = Date.now();
    renderHealth(stats, true);
    renderKpis(stats);
    renderXcache(stats);
    renderNodes(stats, now);
    renderChart(now);
    renderHot(stats);
  }

  async function fetchStats() {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const res = await fetch(STATS_URL, { cache: "no-store", signal: ctl.signal, headers: { Accept: "application/json" } });
      if (!res.ok) throw new Error("HTTP " + res.status);
      const body = await res.json();
      if (body === null || typeof body !== "object") throw new Error("not a JSON object");
      return body;
    } finally {
      clearTimeout(timer);
    }
  }

  function beat() {
    const p = $("pulse");
    p.classList.remove("beat");
    // Restart the animation: reading offsetWidth forces the style change to apply first.
    void p.offsetWidth;
    p.classList.add("beat");
  }

  async function poll() {
    const started = Date.now();
    let stats = null;
    try {
      stats = await fetchStats();
    } catch (_) {
      stats = null;
    }
    if (stats) {
      try {
        render(stats);
        polls += 1;
        lastOk = new Date();
        const u = $("updated-at");
        u.textContent = "updated " + clock(lastOk);
        u.dataset.seq = String(polls);
        $("main").classList.remove("stale");
        beat();
      } catch (e) {
        // A rendering bug must not stop the polling; it is reported once per kind of failure.
        reportOnce(e);
      }
    } else {
      renderHealth(null, false);
      $("main").classList.add("stale");
      $("pulse").classList.remove("beat");
    }
    setTimeout(poll, Math.max(0, POLL_MS - (Date.now() - started)));
  }

  const reported = new Set();
  function reportOnce(e) {
    const k = String(e && e.message);
    if (reported.has(k)) return;
    reported.add(k);
    console.error("dashboard: could not render the stats:", e);
  }

  poll();
})();
