// The flowkit dashboard: plain JavaScript, no build step, served by flowkit-server.
//
// Every piece of text that comes from runs (names, messages, logs, parameters) is put in
// the page with textContent or as SVG text nodes, never as HTML: a log line containing
// <script> shows as text.
"use strict";

const STATES = ["Scheduled", "Pending", "Running", "AwaitingRetry", "Cancelling", "Completed", "Cached",
  "Failed", "Crashed", "Cancelled", "TimedOut"];
const FINAL = new Set(["Completed", "Cached", "Failed", "Crashed", "Cancelled", "TimedOut"]);
const PAGE = 50;

const $ = (id) => document.getElementById(id);

/** Builds an element; string children become text nodes (never parsed as HTML). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** Builds an SVG element. */
function svg(tag, attrs, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function stateBadge(state, message) {
  return el("span", { class: "state s-" + state, title: message || state }, state);
}

// ---- API --------------------------------------------------------------------------------

function apiKey() {
  return localStorage.getItem("flowkit-api-key") || "";
}

async function api(path) {
  const headers = { Accept: "application/json" };
  if (apiKey()) headers.Authorization = "Bearer " + apiKey();
  const res = await fetch(path, { headers });
  if (res.status === 401 || res.status === 403) {
    const key = prompt("This flowkit server needs an API key with the read scope:");
    if (key) {
      localStorage.setItem("flowkit-api-key", key);
      return api(path);
    }
  }
  let body = null;
  try { body = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) {
    const msg = body && body.error ? body.error.message : res.statusText;
    throw new Error(res.status + ": " + msg);
  }
  return body;
}

// ---- formatting ---------------------------------------------------------------------------

function fmtTime(ts) {
  if (!ts) return "–";
  const d = new Date(ts);
  return d.toLocaleString();
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined || isNaN(ms)) return "–";
  if (ms < 1) return "<1ms";
  if (ms < 1000) return Math.round(ms) + "ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + "s";
  const m = Math.floor(ms / 60000);
  const s = Math.round((ms % 60000) / 1000);
  return m < 60 ? m + "m " + s + "s" : Math.floor(m / 60) + "h " + (m % 60) + "m";
}

function runDuration(run) {
  const start = run.started || run.created;
  const end = run.ended || (FINAL.has(run.state) ? run.state_timestamp : null);
  if (!start) return null;
  return (end ? new Date(end) : new Date()) - new Date(start);
}

// ---- runs list ------------------------------------------------------------------------------

const list = { cursor: null, filter: {}, loading: false, shown: new Map() };

function filterQuery(extra) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(list.filter)) if (v) q.set(k, v);
  for (const [k, v] of Object.entries(extra || {})) if (v) q.set(k, v);
  return q.toString();
}

function runRow(run) {
  const link = el("a", { href: runHref(run.id) }, run.name);
  return el("tr", { dataset: { id: run.id } },
    el("td", {}, link),
    el("td", { class: "state-cell" }, stateBadge(run.state, run.state_message)),
    el("td", {}, fmtTime(run.started || run.created)),
    el("td", { class: "duration" }, fmtDuration(runDuration(run))),
    el("td", {}, (run.tags || []).join(", ")),
    // UUID v7 ids start with their timestamp: the tail is what tells runs apart.
    el("td", { class: "mono", title: run.id }, "…" + run.id.slice(-12)));
}

async function loadRuns(reset) {
  if (list.loading) return;
  list.loading = true;
  $("list-error").hidden = true;
  try {
    if (reset) {
      list.cursor = null;
      list.shown.clear();
      $("runs-body").replaceChildren();
    }
    const page = await api("/api/v1/flow-runs?" + filterQuery({ limit: PAGE, cursor: list.cursor }));
    for (const run of page.items) {
      if (list.shown.has(run.id)) continue;
      const row = runRow(run);
      list.shown.set(run.id, row);
      $("runs-body").append(row);
    }
    list.cursor = page.next_cursor;
    $("more").hidden = !page.next_cursor;
    if (!page.items.length && reset) {
      $("runs-body").append(el("tr", {}, el("td", { colspan: 6, class: "empty" }, "No flow runs yet.")));
    }
  } catch (e) {
    $("list-error").textContent = "Could not load runs: " + e.message;
    $("list-error").hidden = false;
  } finally {
    list.loading = false;
  }
}

async function loadStats() {
  try {
    const stats = await api("/api/v1/stats?buckets=24");
    const counts = $("state-counts");
    counts.replaceChildren();
    const totals = new Map(Object.entries(stats.totals || {}));
    for (const s of STATES) {
      const n = totals.get(s) || 0;
      if (!n && !["Completed", "Failed", "Running"].includes(s)) continue;
      counts.append(el("span", { class: "count", dataset: { state: s } },
        stateBadge(s), el("b", {}, String(n))));
    }
    drawChart(stats);
  } catch (e) {
    $("state-counts").replaceChildren(el("span", { class: "error" }, "Stats unavailable: " + e.message));
  }
}

function drawChart(stats) {
  const chart = $("chart");
  chart.replaceChildren();
  const W = 720, H = 140, pad = 24;
  chart.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const buckets = stats.buckets || [];
  const counts = (b) => Object.entries(b.counts || {});
  const max = Math.max(1, ...buckets.map((b) => counts(b).reduce((a, [, n]) => a + n, 0)));
  const bw = (W - pad) / Math.max(1, buckets.length);
  buckets.forEach((b, i) => {
    let y = H - pad;
    for (const [state, n] of counts(b)) {
      if (!n) continue;
      const h = (n / max) * (H - pad * 1.5);
      y -= h;
      const rect = svg("rect", { x: pad + i * bw + 1, y, width: Math.max(1, bw - 2), height: h, class: "bar s-" + state });
      rect.append(svg("title", {}, `${state}: ${n} (${fmtTime(b.start)})`));
      chart.append(rect);
    }
  });
  chart.append(svg("text", { x: 2, y: 12, class: "axis" }, String(max)));
  chart.append(svg("line", { x1: pad, y1: H - pad, x2: W, y2: H - pad, class: "axis-line" }));
  if (buckets.length) {
    chart.append(svg("text", { x: pad, y: H - 6, class: "axis" }, fmtTime(buckets[0].start)));
  }
}

// ---- one flow run -------------------------------------------------------------------------

const detail = { id: null, logCursor: null, shownLogs: new Set(), refreshTimer: null };

async function showRun(id) {
  detail.id = id;
  detail.logCursor = null;
  detail.shownLogs.clear();
  $("logs").replaceChildren();
  $("run-error").hidden = true;
  try {
    const run = await api("/api/v1/flow-runs/" + encodeURIComponent(id));
    renderRunHeader(run);
    await Promise.all([refreshTasks(), loadLogs(true)]);
  } catch (e) {
    $("run-title").textContent = "Flow run " + id;
    $("run-error").textContent = "Could not load this run: " + e.message;
    $("run-error").hidden = false;
  }
}

function renderRunHeader(run) {
  $("run-title").replaceChildren(el("span", {}, run.name), " ", stateBadge(run.state, run.state_message));
  const meta = $("run-meta");
  meta.replaceChildren(...[
    el("span", {}, "Id ", el("code", {}, run.id)),
    el("span", {}, "Started ", fmtTime(run.started || run.created)),
    el("span", {}, "Duration ", fmtDuration(runDuration(run))),
    el("span", {}, "Attempt ", String(run.attempt)),
    run.deployment ? el("span", {}, "Deployment ", run.deployment) : null,
    run.worker ? el("span", {}, "Worker ", run.worker) : null,
    run.version ? el("span", {}, "Version ", run.version) : null,
  ].filter(Boolean));
  $("params").textContent = run.parameters ? JSON.stringify(run.parameters, null, 2) : "(none)";
  const result = FINAL.has(run.state)
    ? run.state + (run.state_message ? ":\n" + run.state_message : "")
    : run.state + " (not finished)";
  $("result").textContent = result;
  $("result").className = "json" + (["Failed", "Crashed", "TimedOut"].includes(run.state) ? " failed" : "");
}

async function refreshTasks() {
  const id = detail.id;
  const [runsBody, graph] = await Promise.all([
    api("/api/v1/flow-runs/" + id + "/task-runs"),
    api("/api/v1/flow-runs/" + id + "/graph"),
  ]);
  if (detail.id !== id) return;
  const runs = Array.isArray(runsBody) ? runsBody : runsBody.items || [];
  drawGantt(runs);
  drawGraph(graph);
  const body = $("tasks-body");
  body.replaceChildren();
  for (const item of runs) {
    const run = item.run || item;
    const attempts = (item.states || []).filter((s) => s.state === "Running").length || run.attempt;
    body.append(el("tr", { dataset: { id: run.id } },
      el("td", {}, run.kind === "flow" ? el("a", { href: runHref(run.id) }, run.name) : run.name),
      el("td", {}, stateBadge(run.state, run.state_message)),
      el("td", { class: "attempts" }, String(attempts)),
      el("td", {}, fmtDuration(runDuration(run))),
      el("td", { class: "message" }, run.state_message || "")));
  }
}

/** Gantt bars: one row per task run, one segment per attempt, retry waits hatched. */
function drawGantt(items) {
  const box = $("gantt");
  box.replaceChildren();
  if (!items.length) {
    box.append(el("p", { class: "empty" }, "No task runs."));
    return;
  }
  const rows = items.map((item) => {
    const run = item.run || item;
    const states = (item.states || []).slice().sort((a, b) => new Date(a.timestamp) - new Date(b.timestamp));
    const t = (s) => new Date(s.timestamp).getTime();
    const segments = [];
    let open = null;
    for (const s of states) {
      if (s.state === "Running") {
        if (open && open.kind === "wait") segments.push({ ...open, end: t(s), outcome: "AwaitingRetry" });
        open = { start: t(s), kind: "run", attempt: s.attempt };
      } else if (open) {
        segments.push({ ...open, end: t(s), outcome: s.state });
        open = s.state === "AwaitingRetry" ? { start: t(s), kind: "wait" } : null;
      }
      if (s.state === "Cached") segments.push({ start: t(s), end: t(s), kind: "run", outcome: "Cached" });
    }
    if (open) segments.push({ ...open, end: Date.now(), outcome: open.kind === "wait" ? "AwaitingRetry" : "Running" });
    const start = segments.length ? segments[0].start : new Date(run.created).getTime();
    const end = segments.length ? Math.max(...segments.map((s) => s.end)) : start;
    return { run, segments, start, end };
  });
  const t0 = Math.min(...rows.map((r) => r.start));
  const t1 = Math.max(t0 + 1, ...rows.map((r) => r.end));
  const W = 720, rowH = 22, label = 160;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${rows.length * rowH + 20}`, class: "gantt-svg", role: "img" });
  const x = (t) => label + ((t - t0) / (t1 - t0)) * (W - label - 10);
  rows.forEach((r, i) => {
    const y = i * rowH + 4;
    chart.append(svg("text", { x: 4, y: y + 13, class: "gantt-label" }, r.run.name));
    for (const seg of r.segments) {
      const rect = svg("rect", {
        x: x(seg.start), y, width: Math.max(2, x(seg.end) - x(seg.start)), height: rowH - 8,
        class: seg.kind === "wait" ? "seg wait" : "seg s-" + seg.outcome,
      });
      const what = seg.kind === "wait" ? "waiting to retry" : `attempt ${seg.attempt || 1}: ${seg.outcome}`;
      rect.append(svg("title", {}, `${r.run.name} — ${what} (${fmtDuration(seg.end - seg.start)})`));
      chart.append(rect);
    }
  });
  chart.append(svg("text", { x: label, y: rows.length * rowH + 16, class: "axis" }, "0"));
  chart.append(svg("text", { x: W - 60, y: rows.length * rowH + 16, class: "axis" }, fmtDuration(t1 - t0)));
  box.append(chart);
}

/** The task graph: layered by longest upstream path, left to right. */
function drawGraph(graph) {
  const box = $("graph");
  box.replaceChildren();
  const nodes = (graph && graph.nodes) || [];
  const edges = (graph && graph.edges) || [];
  if (!nodes.length) {
    box.setAttribute("viewBox", "0 0 720 30");
    box.append(svg("text", { x: 4, y: 20, class: "axis" }, "No task runs."));
    return;
  }
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const ups = new Map(nodes.map((n) => [n.id, []]));
  for (const e of edges) if (byId.has(e.from) && ups.has(e.to)) ups.get(e.to).push(e.from);
  const depth = new Map();
  const depthOf = (id, seen) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const d = Math.max(-1, ...ups.get(id).map((u) => depthOf(u, seen))) + 1;
    depth.set(id, d);
    return d;
  };
  nodes.forEach((n) => depthOf(n.id, new Set()));
  const layers = [];
  for (const n of nodes) (layers[depth.get(n.id)] ||= []).push(n);
  const colW = 170, rowH = 34, maxRows = Math.max(...layers.map((l) => l.length));
  const W = Math.max(720, layers.length * colW + 20), H = maxRows * rowH + 10;
  box.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const pos = new Map();
  layers.forEach((layer, c) => layer.forEach((n, r) => pos.set(n.id, { x: 10 + c * colW, y: 5 + r * rowH })));
  for (const e of edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    box.append(svg("line", { x1: a.x + 150, y1: a.y + 12, x2: b.x, y2: b.y + 12, class: "edge" }));
  }
  for (const n of nodes) {
    const p = pos.get(n.id);
    const g = svg("g", { class: "node", "data-id": n.id });
    g.append(svg("rect", { x: p.x, y: p.y, width: 150, height: 24, rx: 4, class: "node-box s-" + n.state }));
    g.append(svg("text", { x: p.x + 6, y: p.y + 16 }, n.name.length > 22 ? n.name.slice(0, 21) + "…" : n.name));
    g.append(svg("title", {}, `${n.name}: ${n.state}`));
    box.append(g);
  }
}

async function loadLogs(reset) {
  const id = detail.id;
  const level = $("log-level").value;
  if (reset) {
    detail.logCursor = null;
    detail.shownLogs.clear();
    $("logs").replaceChildren();
  }
  // Follow: keep asking from the last cursor until a page comes back short.
  for (let i = 0; i < 20; i++) {
    const q = new URLSearchParams({ limit: 200 });
    if (level) q.set("level", level);
    if (detail.logCursor) q.set("cursor", detail.logCursor);
    const page = await api("/api/v1/flow-runs/" + id + "/logs?" + q);
    if (detail.id !== id) return;
    for (const line of page.items) {
      // Following re-reads the last (short) page: show each line once.
      if (detail.shownLogs.has(line.event_id)) continue;
      detail.shownLogs.add(line.event_id);
      $("logs").append(el("div", { class: "log l-" + line.level },
        el("span", { class: "ts" }, new Date(line.timestamp).toLocaleTimeString()),
        el("span", { class: "lvl" }, line.level),
        el("span", { class: "who" }, line.run_name),
        el("span", { class: "msg" }, line.message),
        Object.keys(line.fields || {}).length
          ? el("span", { class: "fields" }, JSON.stringify(line.fields)) : null));
    }
    if (page.next_cursor) detail.logCursor = page.next_cursor;
    if (!page.next_cursor || page.items.length < 200) break;
  }
}

// ---- live updates -------------------------------------------------------------------------

/**
 * Follows `/api/v1/stream` (server-sent events). Read with fetch rather than EventSource so the
 * API key can go in the Authorization header; reconnects with backoff.
 */
async function connectStream() {
  let delay = 500;
  for (;;) {
    try {
      const headers = { Accept: "text/event-stream" };
      if (apiKey()) headers.Authorization = "Bearer " + apiKey();
      const res = await fetch("/api/v1/stream", { headers });
      if (!res.ok || !res.body) throw new Error("stream answered " + res.status);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          onStreamEvent(name, data);
          delay = 500;
        }
      }
    } catch (_) { /* fall through to reconnect */ }
    $("live").className = "live off";
    $("live-text").textContent = "reconnecting";
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

let statsTimer = null;

function onStreamEvent(name, data) {
  if (name === "ready") {
    $("live").className = "live on";
    $("live-text").textContent = "live";
    return;
  }
  if (name === "lagged") { route(); return; }
  if (name !== "run") return;
  let change;
  try { change = JSON.parse(data); } catch (_) { return; }
  if (!$("list-view").hidden) {
    if (change.kind === "flow" && change.state) onFlowChange(change);
    if (!statsTimer) statsTimer = setTimeout(() => { statsTimer = null; loadStats(); }, 1000);
  }
  if (!$("run-view").hidden && detail.id &&
      (change.flow_run_id === detail.id || change.run_id === detail.id)) {
    clearTimeout(detail.refreshTimer);
    detail.refreshTimer = setTimeout(async () => {
      try {
        const run = await api("/api/v1/flow-runs/" + detail.id);
        renderRunHeader(run);
        await refreshTasks();
        await loadLogs(false);
      } catch (_) { /* the next change retries */ }
    }, 200);
  }
}

async function onFlowChange(change) {
  const row = list.shown.get(change.run_id);
  if (row) {
    row.querySelector(".state-cell").replaceChildren(stateBadge(change.state));
    return;
  }
  // A new flow run: show it on top when the list is unfiltered.
  if (Object.values(list.filter).some(Boolean)) return;
  try {
    const run = await api("/api/v1/flow-runs/" + change.run_id);
    if (list.shown.has(run.id)) return;
    const empty = $("runs-body").querySelector(".empty");
    if (empty) empty.parentElement.remove();
    const fresh = runRow(run);
    list.shown.set(run.id, fresh);
    $("runs-body").prepend(fresh);
  } catch (_) { /* it will show on the next load */ }
}

// ---- routing ------------------------------------------------------------------------------

const RUN_ROUTE = /^\/runs\/([0-9a-fA-F-]{36})$/;

/**
 * A link to a run inside the dashboard. Absolute, so that it also works from the page served
 * at /runs/<id>; from / it only changes the hash, so following it does not reload the page.
 */
function runHref(id) {
  return "/#/runs/" + id;
}

/**
 * The run to show, or null for the list: the hash `#/runs/<id>` (links inside the page) wins;
 * without a hash, the path `/runs/<id>` (the link notifications carry, built by
 * flowkit_wire::links::run_page).
 */
function routedRunId() {
  const hash = location.hash.replace(/^#/, "");
  const m = (hash || location.pathname).match(RUN_ROUTE);
  return m ? m[1] : null;
}

function route() {
  const id = routedRunId();
  $("list-view").hidden = !!id;
  $("run-view").hidden = !id;
  if (id) showRun(id);
  else { loadStats(); loadRuns(true); }
}

function init() {
  const select = document.querySelector("#filters select[name=state]");
  for (const s of STATES) select.append(el("option", { value: s }, s));
  $("filters").addEventListener("submit", (e) => {
    e.preventDefault();
    const data = new FormData(e.target);
    list.filter = Object.fromEntries([...data.entries()].map(([k, v]) => [k, String(v).trim()]));
    loadRuns(true);
  });
  $("filters").addEventListener("reset", () => { list.filter = {}; setTimeout(() => loadRuns(true)); });
  $("more").addEventListener("click", () => loadRuns(false));
  $("log-level").addEventListener("change", () => loadLogs(true));
  window.addEventListener("hashchange", route);
  route();
  connectStream();
}

init();
