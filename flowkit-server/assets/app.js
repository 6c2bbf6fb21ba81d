// The flowkit dashboard: plain JavaScript, no build step, served by flowkit-server.
//
// Every piece of text that comes from runs (names, messages, logs, parameters) is put in
// the page with textContent or as SVG text nodes, never as HTML: a log line containing
// <script> shows as text.
"use strict";

const STATES = ["Scheduled", "Late", "Pending", "Running", "AwaitingRetry", "Cancelling", "Completed",
  "Cached", "Failed", "Crashed", "Cancelled", "TimedOut", "Expired"];
const FINAL = new Set(["Completed", "Cached", "Failed", "Crashed", "Cancelled", "TimedOut", "Expired"]);
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

// The API key lives in this tab's sessionStorage only: closing the tab forgets it.
const KEY_STORAGE = "flowkit-api-key";

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

/** The headers of every API request: the key, and who is asking (recorded as `created_by`). */
function apiHeaders(extra) {
  const headers = { Accept: "application/json", "X-Flowkit-Client": "dashboard", ...(extra || {}) };
  if (apiKey()) headers.Authorization = "Bearer " + apiKey();
  return headers;
}

/** The message of an error answer (`{"error": {"message"}}`), or the status text. */
function errorMessage(res, body) {
  return body && body.error && body.error.message ? body.error.message : res.status + " " + res.statusText;
}

/** Sends a request; answers {status, body, res} whatever the status (body is null if not JSON). */
async function send(method, path, payload) {
  const init = { method, headers: apiHeaders(payload === undefined ? {} : { "Content-Type": "application/json" }) };
  if (payload !== undefined) init.body = JSON.stringify(payload);
  const res = await fetch(path, init);
  let body = null;
  try { body = await res.json(); } catch (_) { /* not JSON */ }
  return { status: res.status, body, res };
}

/** A GET of JSON; throws with the server's message on an error (and asks for a key on 401/403). */
async function api(path) {
  const { status, body, res } = await send("GET", path);
  if (status === 401 || status === 403) askForKey(errorMessage(res, body));
  if (!res.ok) throw new Error(status + ": " + errorMessage(res, body));
  return body;
}

function showKeyState() {
  $("key-button").classList.toggle("set", !!apiKey());
  $("key-status").textContent = apiKey() ? "A key is set for this tab." : "No key set.";
}

/** Opens the key panel, saying why (the server's 401/403 message). */
function askForKey(reason) {
  $("key-panel").hidden = false;
  $("key-reason").textContent = reason || "";
  $("key-reason").hidden = !reason;
  showKeyState();
}

function initKeyPanel() {
  $("key-button").addEventListener("click", () => {
    $("key-panel").hidden = !$("key-panel").hidden;
    $("key-reason").hidden = true;
    showKeyState();
  });
  $("key-panel").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("key-input").value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    $("key-input").value = "";
    $("key-panel").hidden = true;
    showKeyState();
    route();
  });
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    showKeyState();
  });
  showKeyState();
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

/** Warns, above the runs list, when reporters had to drop events (some runs are incomplete). */
async function loadDrops() {
  const note = $("drops");
  try {
    const drops = await api("/api/v1/reporter-drops");
    if (!drops.total_dropped) { note.hidden = true; return; }
    const latest = (drops.items || [])[0];
    note.replaceChildren(
      `Reporters dropped ${drops.total_dropped} events (${drops.workers} process${drops.workers === 1 ? "" : "es"}`,
      latest ? `; latest ${latest.worker} at ${fmtTime(latest.last_seen)}` : "",
      "): some runs may be incomplete.");
    note.hidden = false;
  } catch (_) {
    note.hidden = true; // the list says what is wrong with the key or the server
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

const detail = { id: null, logCursor: null, shownLogs: new Set(), refreshTimer: null, changed: new Set() };

/** Task runs asked for per request (`limit` of `GET /flow-runs/{id}/task-runs`). */
const TASK_PAGE = 100;
/** The most task runs the run page loads and draws (timeline rows and table rows); a larger
 * flow says how many more it has, and its graph is summed up per task name. */
const MAX_TASK_ROWS = 500;

/**
 * The loaded task runs of the open flow run, oldest first, page by page: `starts[p]` is the
 * cursor page p was fetched from (null for the first), so a change re-fetches from the page
 * that holds the changed run (or the last page, for a new one) instead of everything.
 */
const tasks = { items: [], starts: [], more: false, total: null };

function resetTasks() {
  tasks.items = [];
  tasks.starts = [];
  tasks.more = false;
  tasks.total = null;
}

async function showRun(id) {
  detail.id = id;
  detail.logCursor = null;
  detail.shownLogs.clear();
  detail.changed.clear();
  resetTasks();
  $("logs").replaceChildren();
  $("run-error").hidden = true;
  $("action-error").hidden = true;
  let run;
  try {
    run = await api("/api/v1/flow-runs/" + encodeURIComponent(id));
  } catch (e) {
    $("run-title").textContent = "Flow run " + id;
    $("run-error").textContent = "Could not load this run: " + e.message;
    $("run-error").hidden = false;
    return;
  }
  renderRunHeader(run);
  // A key limited to triggering a deployment reads its runs, their result and logs, but not
  // the task runs: show what can be shown.
  const parts = await Promise.allSettled([refreshTasks(), loadLogs(true)]);
  const failed = parts.find((p) => p.status === "rejected");
  if (failed && detail.id === id) {
    $("run-error").textContent = "Some of this run could not be loaded: " + failed.reason.message;
    $("run-error").hidden = false;
  }
}

const RETRYABLE = new Set(["Failed", "Crashed", "Cancelled", "TimedOut"]);

/** Who created a run: a link to the parent run for `run:ID`, the name otherwise. */
function createdBy(by) {
  const parent = by.startsWith("run:") ? by.slice(4) : null;
  return parent ? el("a", { href: runHref(parent) }, el("code", {}, by)) : el("code", {}, by);
}

function renderRunHeader(run) {
  $("run-title").replaceChildren(el("span", {}, run.name), " ", stateBadge(run.state, run.state_message));
  const meta = $("run-meta");
  meta.replaceChildren(...[
    el("span", {}, "Id ", el("code", {}, run.id)),
    el("span", {}, "Started ", fmtTime(run.started || run.created)),
    el("span", {}, "Duration ", fmtDuration(runDuration(run))),
    el("span", {}, "Attempt ", String(run.attempt)),
    run.deployment ? el("span", {}, "Deployment ", el("a", { href: deploymentHref(run.deployment) }, run.deployment)) : null,
    run.created_by ? el("span", { class: "created-by" }, "Created by ", createdBy(run.created_by)) : null,
    run.worker ? el("span", {}, "Worker ", run.worker) : null,
    run.version ? el("span", {}, "Version ", run.version) : null,
    run.scheduled_for ? el("span", {}, "Scheduled for ", fmtTime(run.scheduled_for)) : null,
    run.skipped_instants ? el("span", { class: "skipped-instants" }, "Stands for ", String(run.skipped_instants), " skipped instant" + (run.skipped_instants === 1 ? "" : "s")) : null,
  ].filter(Boolean));
  $("run-message").textContent = run.state_message || "";
  $("run-message").hidden = !run.state_message;
  $("params").textContent = run.parameters ? JSON.stringify(run.parameters, null, 2) : "(none)";
  const result = FINAL.has(run.state)
    ? run.state + (run.state_message ? ":\n" + run.state_message : "")
    : run.state + " (not finished)";
  $("result").textContent = result;
  $("result").className = "json" + (["Failed", "Crashed", "TimedOut"].includes(run.state) ? " failed" : "");
  // Deployed runs can be cancelled until they end, and retried when they ended badly.
  const deployed = !!run.deployment;
  $("cancel-run").hidden = !deployed || FINAL.has(run.state) || run.state === "Cancelling";
  $("retry-run").hidden = !deployed || !RETRYABLE.has(run.state);
  if (deployed && run.state === "Completed") loadResult(run.id);
}

/** The output of a completed deployed run, from `GET /flow-runs/{id}/result`. */
async function loadResult(id) {
  try {
    const { status, body, res } = await send("GET", "/api/v1/flow-runs/" + encodeURIComponent(id) + "/result");
    if (detail.id !== id) return;
    if (status === 200) {
      $("result").textContent = JSON.stringify(body, null, 2);
      $("result").className = "json result-value";
    } else if (status !== 202) {
      $("result").textContent = "Completed (the result could not be read: " + errorMessage(res, body) + ")";
    }
  } catch (_) { /* the header already says Completed */ }
}

/** Cancel or Retry: answers the run, or shows the server's message (asking for a key on 401/403). */
async function runAction(action) {
  const id = detail.id;
  $("action-error").hidden = true;
  // Cancel takes an optional body (a reason), retry none: both send `{}`, as JSON, which the
  // server asks of every request that changes something.
  const { status, body, res } = await send("POST", "/api/v1/flow-runs/" + encodeURIComponent(id) + "/" + action, {});
  if (detail.id !== id) return;
  if (res.ok && body && body.id) {
    renderRunHeader(body);
    return;
  }
  const message = errorMessage(res, body);
  if (status === 401 || status === 403) askForKey(message);
  $("action-error").textContent = (action === "cancel" ? "Cannot cancel: " : "Cannot retry: ") + message;
  $("action-error").hidden = false;
}

/**
 * The first page to (re-)fetch after the runs `changed` changed: the page of the earliest
 * loaded one, else (new runs) the last page loaded; null when nothing loaded can change.
 */
function firstStalePage(changed) {
  if (!tasks.starts.length) return 0;
  const at = new Map(tasks.items.map((item, i) => [(item.run || item).id, i]));
  let first = null;
  let unknown = false;
  for (const runId of changed) {
    const i = at.has(runId) ? at.get(runId) : -1;
    if (i < 0) unknown = true;
    else first = first === null ? Math.floor(i / TASK_PAGE) : Math.min(first, Math.floor(i / TASK_PAGE));
  }
  // A new run comes after the loaded ones (oldest first): only the last page, and only when
  // the bound leaves room for it.
  if (unknown && tasks.items.length < MAX_TASK_ROWS) {
    const last = tasks.starts.length - 1;
    first = first === null ? last : Math.min(first, last);
  }
  return first;
}

/**
 * Loads the task runs of the open flow run page by page (at most MAX_TASK_ROWS) and its
 * graph, and draws them. `changed` (run ids) limits the reload to the pages from the one that
 * holds the earliest changed run; without it, everything is loaded again.
 */
async function refreshTasks(changed) {
  const id = detail.id;
  const base = "/api/v1/flow-runs/" + encodeURIComponent(id);
  const graphLoad = api(base + "/graph");
  let page = changed && changed.size ? firstStalePage(changed) : 0;
  if (page !== null) {
    const items = tasks.items.slice(0, page * TASK_PAGE);
    const starts = tasks.starts.slice(0, page);
    let cursor = tasks.starts[page] || null;
    let more = false;
    for (;;) {
      const q = new URLSearchParams({ limit: String(TASK_PAGE) });
      if (cursor) q.set("cursor", cursor);
      const body = await api(base + "/task-runs?" + q);
      if (detail.id !== id) return;
      starts.push(cursor);
      items.push(...(body.items || []));
      cursor = body.next_cursor || null;
      more = !!cursor;
      if (!cursor || items.length >= MAX_TASK_ROWS) break;
    }
    tasks.items = items.slice(0, MAX_TASK_ROWS);
    tasks.starts = starts;
    tasks.more = more || items.length > MAX_TASK_ROWS;
  }
  const graph = await graphLoad;
  if (detail.id !== id) return;
  tasks.total = graph && graph.truncated ? graph.total : null;
  const runs = tasks.items;
  drawGantt(runs);
  drawGraph(graph);
  showMoreTasks();
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

/** "N more task runs (showing the first M)" under the timeline, when the bound cut it. */
function showMoreTasks() {
  const note = $("tasks-more");
  const shown = tasks.items.length;
  if (!tasks.more && !(tasks.total > shown)) {
    note.hidden = true;
    return;
  }
  const more = tasks.total > shown ? String(tasks.total - shown) : "More";
  note.textContent = `${more} more task runs (showing the first ${shown})`;
  note.hidden = false;
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

/**
 * A graph too large to draw (the server sent its first nodes and `truncated`): every task run
 * summed up per task name instead.
 */
function drawGraphGroups(graph) {
  const box = $("graph-groups");
  const rows = (graph.groups || []).map((g) => el("tr", { dataset: { name: g.name || "" } },
    el("td", {}, g.name === null || g.name === undefined ? el("i", {}, "other tasks") : g.name),
    el("td", { class: "count" }, String(g.count)),
    el("td", {}, ...(g.states || []).map((s) => el("span", { class: "state-count" }, stateBadge(s.state), " " + s.count))),
    el("td", {}, g.earliest_start ? fmtTime(g.earliest_start) : "—"),
    el("td", {}, g.latest_end ? fmtTime(g.latest_end) : "—")));
  box.replaceChildren(
    el("p", { class: "note" }, `${graph.total} task runs: too many to draw, summed up per task name.`),
    el("table", { class: "runs" },
      el("thead", {}, el("tr", {}, ...["Task", "Runs", "States", "Earliest start", "Latest end"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows)));
  box.hidden = false;
}

/** The task graph: layered by longest upstream path, left to right. */
function drawGraph(graph) {
  const box = $("graph");
  box.replaceChildren();
  // (An SVG element has no `hidden` property: its style says whether it shows.)
  if (graph && graph.truncated) {
    box.style.display = "none";
    drawGraphGroups(graph);
    return;
  }
  box.style.display = "";
  $("graph-groups").hidden = true;
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

// ---- deployments ----------------------------------------------------------------------------

const deployments = { cursor: null, loading: false };

function deploymentHref(key) {
  return "/#/deployments/" + key.split("/").map(encodeURIComponent).join("/");
}

async function loadDeployments(reset) {
  if (deployments.loading) return;
  deployments.loading = true;
  $("deployments-error").hidden = true;
  try {
    if (reset) {
      deployments.cursor = null;
      $("deployments-body").replaceChildren();
    }
    const q = new URLSearchParams({ limit: PAGE });
    if (deployments.cursor) q.set("cursor", deployments.cursor);
    const page = await api("/api/v1/deployments?" + q);
    for (const d of page.items) {
      const key = d.flow + "/" + d.name;
      $("deployments-body").append(el("tr", { dataset: { deployment: key } },
        el("td", {}, el("a", { href: deploymentHref(key) }, key)),
        el("td", { class: "message" }, d.description || ""),
        el("td", { class: "mono" }, d.latest_version),
        el("td", { class: "versions" }, String(d.versions)),
        el("td", {}, fmtTime(d.updated))));
    }
    deployments.cursor = page.next_cursor;
    $("more-deployments").hidden = !page.next_cursor;
    if (!page.items.length && reset) {
      $("deployments-body").append(el("tr", {}, el("td", { colspan: 5, class: "empty" },
        "No deployments yet: a worker registers them (flowkit::serve).")));
    }
  } catch (e) {
    $("deployments-error").textContent = "Could not load deployments: " + e.message;
    $("deployments-error").hidden = false;
  } finally {
    deployments.loading = false;
  }
}

// The deployment shown: its key, detail, versions (with their schemas) and the form's schema.
const shown = { key: null, detail: null, versions: [] };

async function showDeployment(flow, name) {
  const key = flow + "/" + name;
  shown.key = key;
  shown.detail = null;
  shown.versions = [];
  $("deployment-error").hidden = true;
  $("deployment-title").textContent = key;
  $("deployment-description").textContent = "";
  $("deployment-meta").replaceChildren();
  $("run-fields").replaceChildren();
  $("run-form-error").hidden = true;
  const base = "/api/v1/deployments/" + encodeURIComponent(flow) + "/" + encodeURIComponent(name);
  let detailBody, versions;
  try {
    [detailBody, versions] = await Promise.all([api(base), api(base + "/versions?limit=100")]);
  } catch (e) {
    if (shown.key !== key) return;
    $("deployment-error").textContent = "Could not load this deployment: " + e.message;
    $("deployment-error").hidden = false;
    return;
  }
  if (shown.key !== key) return;
  shown.detail = detailBody;
  shown.versions = versions.items || [];
  renderDeployment(detailBody, shown.versions);
  fillVersionSelect(detailBody, shown.versions);
  renderForm();
}

/** Re-reads the deployment's detail (runs, workers) without touching the form. */
async function refreshDeployment() {
  const key = shown.key;
  if (!key || !shown.detail) return;
  const { flow, name } = shown.detail.latest;
  try {
    const detail = await api("/api/v1/deployments/" + encodeURIComponent(flow) + "/" + encodeURIComponent(name));
    if (shown.key !== key) return;
    shown.detail = detail;
    renderDeployment(detail, shown.versions);
  } catch (_) { /* the next change retries */ }
}

function renderDeployment(detail, versions) {
  const latest = detail.latest;
  $("deployment-description").textContent = latest.description || "(no description)";
  $("deployment-meta").replaceChildren(...[
    el("span", {}, "Latest version ", el("code", {}, latest.version)),
    el("span", {}, "Versions ", String(detail.versions)),
    detail.serving_version ? el("span", {}, "Serving ", el("code", {}, detail.serving_version)) : null,
    el("span", {}, "Function ", el("code", {}, latest.flow_key)),
    latest.concurrency_limit ? el("span", {}, "Limit ", String(latest.concurrency_limit)) : null,
    latest.retries ? el("span", {}, "Retries ", String(latest.retries)) : null,
    (latest.tags || []).length ? el("span", {}, "Tags ", latest.tags.join(", ")) : null,
  ].filter(Boolean));

  const workers = $("workers");
  workers.replaceChildren();
  for (const w of detail.live_workers || []) {
    workers.append(el("li", { dataset: { worker: w.id } },
      el("code", {}, w.name), " serves ", (w.versions || []).join(", ") || "?",
      el("span", { class: "muted" }, " · seen " + fmtTime(w.last_seen))));
  }
  if (!(detail.live_workers || []).length) {
    workers.append(el("li", { class: "empty no-worker" }, "no live worker: runs wait"));
  }

  const vbody = $("versions-body");
  vbody.replaceChildren(...versions.map((v) => el("tr", {},
    el("td", { class: "mono" }, v.version),
    el("td", {}, fmtTime(v.registered)),
    el("td", { class: "mono" }, v.flow_key))));

  const rbody = $("deployment-runs-body");
  rbody.replaceChildren(...(detail.recent_runs || []).map((run) => el("tr", { dataset: { id: run.id } },
    el("td", {}, el("a", { href: runHref(run.id) }, run.name)),
    el("td", {}, stateBadge(run.state, run.state_message)),
    el("td", {}, fmtTime(run.created)),
    el("td", { class: "mono" }, run.created_by || ""),
    el("td", { class: "mono", title: run.id }, "…" + run.id.slice(-12)))));
  if (!(detail.recent_runs || []).length) {
    rbody.append(el("tr", {}, el("td", { colspan: 5, class: "empty" }, "No runs yet.")));
  }
  renderSchedules(detail.schedules || []);
}

// ---- a deployment's schedules -----------------------------------------------------------------

/** A schedule's timing for people: `cron 0 3 * * *` or `every 15m`. */
function scheduleTiming(spec) {
  if (spec.cron) return "cron " + spec.cron;
  if (spec.interval) return "every " + spec.interval;
  return "";
}

/** The schedules of the deployment shown: timing, zone, source, active flag, next fire time. */
function renderSchedules(schedules) {
  const body = $("schedules-body");
  body.replaceChildren(...schedules.map((s) => el("tr", { dataset: { schedule: s.id } },
    el("td", { class: "mono" }, scheduleTiming(s.spec || {})),
    el("td", {}, (s.spec && s.spec.timezone) || "UTC"),
    el("td", {}, s.source === "api" ? "API" : "code"),
    el("td", { class: s.active ? "" : "muted" }, s.active ? "active" : "paused"),
    el("td", { class: "next-fire" }, s.next_at ? fmtTime(s.next_at) : "—"),
    el("td", { class: "mono", title: s.id }, "…" + s.id.slice(-12)))));
  if (!schedules.length) {
    body.append(el("tr", {}, el("td", { colspan: 6, class: "empty" }, "No schedules.")));
  }
}

/** The version select: the default (what a trigger without `version` runs), then each one. */
function fillVersionSelect(detail, versions) {
  const fallback = detail.serving_version || detail.latest.version;
  $("run-version").replaceChildren(el("option", { value: "" }, "default (" + fallback + ")"),
    ...versions.map((v) => el("option", { value: v.version }, v.version)));
}

/** The version whose schema the form follows. */
function formVersion() {
  const wanted = $("run-version").value || (shown.detail.serving_version || shown.detail.latest.version);
  return shown.versions.find((v) => v.version === wanted) || shown.detail.latest;
}

// ---- the run form, generated from the parameter schema ---------------------------------------

/** Follows a local `$ref` (`#/$defs/X`, `#/definitions/X`) inside `root`. */
function deref(schema, root, depth) {
  let s = schema;
  for (let i = 0; s && typeof s === "object" && s.$ref && i < 16; i++) {
    const ref = s.$ref;
    if (!ref.startsWith("#")) return {};
    let target = root;
    for (const part of ref.slice(1).split("/").filter(Boolean)) {
      const key = decodeURIComponent(part).replace(/~1/g, "/").replace(/~0/g, "~");
      target = target && typeof target === "object" ? target[key] : undefined;
    }
    // Keep the sibling keywords of the reference (description, default).
    const { $ref, ...rest } = s;
    s = { ...(target || {}), ...rest };
  }
  return s || {};
}

/**
 * What a property is, for its input: {kind, nullable, choices, schema}. `Option<T>` is
 * `type: [T, "null"]` or `anyOf`/`oneOf` with a `null` branch: optional (and nullable).
 */
function describeProperty(schema, root) {
  let s = deref(schema, root);
  let nullable = false;
  for (const union of ["anyOf", "oneOf"]) {
    if (Array.isArray(s[union])) {
      const branches = s[union].map((b) => deref(b, root));
      const isNull = (b) => b.type === "null" || (b.const === null) || (Array.isArray(b.enum) && b.enum.length === 1 && b.enum[0] === null);
      const rest = branches.filter((b) => !isNull(b));
      if (rest.length < branches.length) nullable = true;
      // A union of constants (schemars' documented enums): a choice.
      if (rest.length && rest.every((b) => "const" in b || (Array.isArray(b.enum) && b.enum.length === 1))) {
        const choices = rest.map((b) => ("const" in b ? b.const : b.enum[0]));
        const { [union]: _, ...outer } = s;
        return { kind: "choice", nullable, choices, schema: { ...outer, ...(rest.length === 1 ? rest[0] : {}) } };
      }
      if (rest.length === 1) {
        const { [union]: _, ...outer } = s;
        s = { ...rest[0], ...outer, description: outer.description || rest[0].description, default: outer.default !== undefined ? outer.default : rest[0].default };
      } else {
        return { kind: "json", nullable, schema: s };
      }
    }
  }
  let type = s.type;
  if (Array.isArray(type)) {
    if (type.includes("null")) nullable = true;
    const rest = type.filter((t) => t !== "null");
    type = rest.length === 1 ? rest[0] : null;
  }
  if (Array.isArray(s.enum)) {
    const choices = s.enum.filter((v) => v !== null);
    if (choices.length < s.enum.length) nullable = true;
    return { kind: "choice", nullable, choices, schema: s };
  }
  if ("const" in s) return { kind: "choice", nullable, choices: [s.const], schema: s };
  if (type === "string" || type === "integer" || type === "number" || type === "boolean") {
    return { kind: type, nullable, schema: s };
  }
  return { kind: "json", nullable, schema: s };
}

/** A choice's label and its value in the select (JSON, so non-string constants survive). */
function choiceOption(value, selected) {
  const label = typeof value === "string" ? value : JSON.stringify(value);
  const option = el("option", { value: JSON.stringify(value) }, label);
  if (selected) option.selected = true;
  return option;
}

/** The input of one property; `initial` is its prefilled value (or undefined). */
function inputFor(name, info, required, initial) {
  const id = "param-" + name.replace(/[^A-Za-z0-9_-]/g, "_");
  const attrs = { id, name, "data-kind": info.kind };
  if (required) attrs["aria-required"] = "true";
  switch (info.kind) {
    case "choice": {
      const select = el("select", attrs);
      if (!required) select.append(el("option", { value: "" }, "(not given)"));
      for (const v of info.choices) select.append(choiceOption(v, initial !== undefined && JSON.stringify(initial) === JSON.stringify(v)));
      return select;
    }
    case "boolean": {
      // A select, so that an optional boolean can also be left out.
      const select = el("select", attrs);
      if (!required) select.append(el("option", { value: "" }, "(not given)"));
      for (const v of [true, false]) select.append(choiceOption(v, initial === v));
      return select;
    }
    case "integer":
    case "number": {
      // Text, not type=number: what is typed reaches the server, whose error names the field.
      const input = el("input", { ...attrs, type: "text", inputmode: info.kind === "integer" ? "numeric" : "decimal" });
      const s = info.schema;
      const bounds = [];
      if (s.minimum !== undefined) bounds.push("≥ " + s.minimum);
      if (s.exclusiveMinimum !== undefined) bounds.push("> " + s.exclusiveMinimum);
      if (s.maximum !== undefined) bounds.push("≤ " + s.maximum);
      if (s.exclusiveMaximum !== undefined) bounds.push("< " + s.exclusiveMaximum);
      input.placeholder = info.kind + (bounds.length ? " " + bounds.join(", ") : "");
      if (initial !== undefined && initial !== null) input.value = String(initial);
      return input;
    }
    case "string": {
      const input = el("input", { ...attrs, type: "text" });
      if (info.schema.format) input.placeholder = info.schema.format;
      if (initial !== undefined && initial !== null) input.value = String(initial);
      return input;
    }
    default: {
      const area = el("textarea", { ...attrs, spellcheck: "false", placeholder: "JSON" });
      if (initial !== undefined) area.value = JSON.stringify(initial, null, 2);
      return area;
    }
  }
}

function renderForm() {
  const version = formVersion();
  const root = version.parameter_schema || {};
  const schema = deref(root, root);
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  const defaults = version.default_parameters || {};
  const box = $("run-fields");
  box.replaceChildren();
  $("run-form-error").hidden = true;
  // The flow's argument order (JSON objects do not keep it), then anything it does not list.
  const declared = (Array.isArray(root["x-flowkit-order"]) ? root["x-flowkit-order"] : [])
    .filter((name) => Object.prototype.hasOwnProperty.call(props, name));
  const names = [...new Set([...declared, ...Object.keys(props)])];
  if (!names.length) box.append(el("p", { class: "empty" }, "This flow takes no parameters."));
  for (const name of names) {
    const info = describeProperty(props[name], root);
    // A deployment default fills in what is not given: such a field is optional here too.
    const hasDefault = Object.prototype.hasOwnProperty.call(defaults, name);
    const isRequired = required.has(name) && !info.nullable && !hasDefault;
    const initial = hasDefault ? defaults[name] : info.schema.default;
    const input = inputFor(name, info, isRequired, initial);
    const typeHint = info.kind === "choice" ? "one of" : info.kind === "json" ? "JSON" : info.kind;
    const label = el("label", { for: input.id },
      el("span", { class: "field-name" }, name),
      isRequired ? el("span", { class: "required-mark", title: "required" }, " *") : null,
      el("span", { class: "hint" }, " " + typeHint + (isRequired ? ", required" : ", optional")));
    const field = el("div", { class: "field" + (isRequired ? " required" : ""), dataset: { field: name } },
      label, input,
      info.schema.description ? el("span", { class: "hint description" }, info.schema.description) : null,
      el("p", { class: "field-error", hidden: "" }));
    box.append(field);
  }
}

/** Reads the form: {parameters} or {errors: {name: message}} for values that cannot be sent. */
function readForm() {
  const parameters = {};
  const errors = {};
  for (const input of $("run-fields").querySelectorAll("[data-kind]")) {
    const name = input.name;
    const raw = input.value;
    if (raw.trim() === "") continue; // not given: the server applies defaults, or says it is missing
    switch (input.dataset.kind) {
      case "choice":
      case "boolean":
        parameters[name] = JSON.parse(raw);
        break;
      case "integer":
      case "number": {
        const n = Number(raw.trim());
        // Not a number: send the text as typed; the server's error shows at the field.
        parameters[name] = Number.isFinite(n) ? n : raw;
        break;
      }
      case "string":
        parameters[name] = raw;
        break;
      default:
        try { parameters[name] = JSON.parse(raw); } catch (e) { errors[name] = "not valid JSON: " + e.message; }
    }
  }
  return { parameters, errors };
}

function clearFieldErrors() {
  for (const field of $("run-fields").querySelectorAll(".field")) {
    field.classList.remove("invalid");
    const p = field.querySelector(".field-error");
    p.textContent = "";
    p.hidden = true;
  }
  $("run-form-error").hidden = true;
  $("run-form-error").textContent = "";
}

/** Shows a message at the field of a JSON pointer (`/epochs`, `/config/depth`); false if none. */
function showFieldError(pointer, message) {
  const parts = pointer.split("/").slice(1).map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
  if (!parts.length) return false;
  const field = [...$("run-fields").querySelectorAll(".field")].find((f) => f.dataset.field === parts[0]);
  if (!field) return false;
  field.classList.add("invalid");
  const p = field.querySelector(".field-error");
  const where = parts.length > 1 ? "/" + parts.slice(1).join("/") + ": " : "";
  p.textContent = (p.textContent ? p.textContent + "\n" : "") + where + message;
  p.hidden = false;
  return true;
}

function formError(message) {
  const p = $("run-form-error");
  p.textContent = (p.textContent ? p.textContent + "\n" : "") + message;
  p.hidden = false;
}

async function submitRun(e) {
  e.preventDefault();
  if (!shown.detail) return;
  clearFieldErrors();
  const { parameters, errors } = readForm();
  if (Object.keys(errors).length) {
    for (const [name, message] of Object.entries(errors)) showFieldError("/" + name, message);
    return;
  }
  const body = { parameters };
  if ($("run-version").value) body.version = $("run-version").value;
  const { flow, name } = shown.detail.latest;
  const path = "/api/v1/deployments/" + encodeURIComponent(flow) + "/" + encodeURIComponent(name) + "/runs";
  $("run-submit").disabled = true;
  try {
    const { status, body: answer, res } = await send("POST", path, body);
    if ((status === 201 || status === 200 || status === 202) && answer && answer.id) {
      location.hash = "#/runs/" + answer.id;
      return;
    }
    const message = errorMessage(res, answer);
    if (status === 401 || status === 403) askForKey(message);
    const details = (answer && answer.error && answer.error.details) || [];
    if (status === 422 && details.length) {
      formError(message);
      // Parameters' pointers are into `parameters`; the body's (invalid_body) into the body.
      const intoParameters = answer.error.code === "invalid_parameters";
      for (const d of details) {
        const pointer = intoParameters ? d.pointer : d.pointer.replace(/^\/parameters(?=\/|$)/, "");
        if (!(intoParameters || d.pointer.startsWith("/parameters")) || !showFieldError(pointer, d.message)) {
          formError((d.pointer || "(body)") + ": " + d.message);
        }
      }
    } else {
      formError(message);
    }
  } catch (err) {
    formError("Could not reach the server: " + err.message);
  } finally {
    $("run-submit").disabled = false;
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
let deploymentTimer = null;

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
  if (!$("deployment-view").hidden && change.kind === "flow") {
    clearTimeout(deploymentTimer);
    deploymentTimer = setTimeout(refreshDeployment, 300);
  }
  if (!$("run-view").hidden && detail.id &&
      (change.flow_run_id === detail.id || change.run_id === detail.id)) {
    if (change.run_id !== detail.id) detail.changed.add(change.run_id);
    clearTimeout(detail.refreshTimer);
    detail.refreshTimer = setTimeout(async () => {
      // Only the pages of the runs that changed are fetched again.
      const changed = new Set(detail.changed);
      detail.changed.clear();
      try {
        const run = await api("/api/v1/flow-runs/" + detail.id);
        renderRunHeader(run);
        if (changed.size) await refreshTasks(changed);
        await loadLogs(false);
      } catch (_) {
        for (const runId of changed) detail.changed.add(runId);
      }
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

// ---- alerts -------------------------------------------------------------------------------
// The alert rules of the server and their recent deliveries (each with its attempts). Only
// this section reads /api/v1/alert-rules; routing shows it at #/alerts.

/** Recent deliveries shown per rule. */
const ALERT_DELIVERIES = 20;

function alertWhen(rule) {
  const when = [...(rule.states || [])];
  if (rule.worker_absent_for) when.push("no worker for " + rule.worker_absent_for);
  return when.join(", ");
}

function alertScope(rule) {
  const scope = [];
  if (rule.flow) scope.push("flow " + rule.flow);
  if (rule.deployment) scope.push("deployment " + rule.deployment);
  if (rule.tag) scope.push("tag " + rule.tag);
  return scope.length ? scope.join(", ") : "every flow run";
}

function alertAttempts(delivery) {
  return el("ol", { class: "attempts" }, ...delivery.attempts.map((a) =>
    el("li", { class: a.status_code && a.status_code < 300 ? "ok" : "bad" },
      fmtTime(a.at) + " · " + (a.status_code ? String(a.status_code) : "no answer") +
      (a.error ? " · " + a.error : ""))));
}

function alertDeliveryRow(d) {
  const about = d.run_id
    ? el("a", { href: runHref(d.run_id), class: "mono" }, d.run_id.slice(0, 8))
    : "workers gone";
  return el("tr", { dataset: { delivery: d.id, status: d.status } },
    el("td", {}, fmtTime(d.created)),
    el("td", {}, about),
    el("td", {}, d.state ? stateBadge(d.state) : "–"),
    el("td", {}, d.target),
    el("td", { class: "delivery-status" }, d.status +
      (d.status === "pending" && d.next_attempt ? " (next " + fmtTime(d.next_attempt) + ")" : "")),
    el("td", {}, alertAttempts(d)));
}

async function alertRuleCard(rule) {
  const body = el("tbody", {});
  const enabled = rule.enabled !== false;
  const edit = el("button", { type: "button", class: "alert-edit" }, "Edit");
  edit.addEventListener("click", () => editAlertRule(rule));
  const toggle = el("button", { type: "button", class: "alert-toggle" }, enabled ? "Disable" : "Enable");
  toggle.addEventListener("click", () => alertAction(toggle, "PATCH", rule.id, { enabled: !enabled }));
  // Deleting takes two clicks: the first asks.
  const remove = el("button", { type: "button", class: "alert-delete" }, "Delete");
  remove.addEventListener("click", () => {
    if (remove.dataset.armed) alertAction(remove, "DELETE", rule.id);
    else { remove.dataset.armed = "1"; remove.textContent = "Really delete?"; }
  });
  const card = el("article", { class: "alert-rule" + (enabled ? "" : " disabled"),
    dataset: { rule: rule.id, enabled: String(enabled) } },
    el("h2", {}, rule.name, enabled ? null : el("span", { class: "paused" }, "disabled")),
    el("div", { class: "actions" }, edit, toggle, remove),
    el("p", { class: "meta" },
      el("span", {}, "when: " + alertWhen(rule)),
      el("span", {}, "for: " + alertScope(rule)),
      el("span", { class: "targets" }, "to: " + [rule.webhook, rule.slack].filter(Boolean).join(", ")),
      el("span", {}, "quiet period: " + (rule.quiet_period || "10m"))),
    el("table", { class: "runs" },
      el("thead", {}, el("tr", {}, el("th", {}, "Created"), el("th", {}, "Run"), el("th", {}, "State"),
        el("th", {}, "Target"), el("th", {}, "Status"), el("th", {}, "Attempts"))),
      body));
  const page = await api("/api/v1/alert-rules/" + rule.id + "/deliveries?limit=" + ALERT_DELIVERIES);
  for (const d of page.items) body.append(alertDeliveryRow(d));
  if (!page.items.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "empty" }, "No deliveries yet.")));
  return card;
}

/** The rule form's fields (their `data-field`), in the body's names. */
const ALERT_TEXT_FIELDS = ["name", "flow", "deployment", "tag", "worker_absent_for", "webhook", "slack", "quiet_period"];
const ALERT_STATES = ["Failed", "Crashed", "TimedOut", "Late", "Expired", "Cancelled"];

function alertInput(name) {
  return $("alert-" + name.replace(/_/g, "-"));
}

function initAlertForm() {
  $("alert-states").replaceChildren(...ALERT_STATES.map((s) =>
    el("label", {}, el("input", { type: "checkbox", name: "states", value: s }), " " + s)));
  $("alert-form").addEventListener("submit", submitAlertRule);
  $("alert-cancel-edit").addEventListener("click", resetAlertForm);
}

function clearAlertErrors() {
  for (const field of $("alert-form").querySelectorAll(".field")) {
    field.classList.remove("invalid");
    const p = field.querySelector(".field-error");
    p.textContent = "";
    p.hidden = true;
  }
  $("alert-form-error").hidden = true;
  $("alert-form-error").textContent = "";
}

/** Shows a message at the form's field of a JSON pointer (`/webhook`, `/states/0`); false if none. */
function alertFieldError(pointer, message) {
  const name = pointer.split("/")[1];
  const field = name && [...$("alert-form").querySelectorAll(".field")].find((f) => f.dataset.field === name);
  if (!field) return false;
  field.classList.add("invalid");
  const p = field.querySelector(".field-error");
  p.textContent = (p.textContent ? p.textContent + "\n" : "") + message;
  p.hidden = false;
  return true;
}

function alertFormError(message) {
  const p = $("alert-form-error");
  p.textContent = (p.textContent ? p.textContent + "\n" : "") + message;
  p.hidden = false;
}

/** Back to a blank "new rule" form. */
function resetAlertForm() {
  $("alert-form").reset();
  $("alert-edit-id").value = "";
  $("alert-enabled").checked = true;
  $("alert-form-title").textContent = "New rule";
  $("alert-submit").textContent = "Create rule";
  $("alert-cancel-edit").hidden = true;
  clearAlertErrors();
}

/** Fills the form with `rule` (its URLs masked: sent back as they are, they keep the stored ones). */
function editAlertRule(rule) {
  resetAlertForm();
  $("alert-edit-id").value = rule.id;
  for (const name of ALERT_TEXT_FIELDS) alertInput(name).value = rule[name] || "";
  for (const box of $("alert-states").querySelectorAll("input")) box.checked = (rule.states || []).includes(box.value);
  $("alert-enabled").checked = rule.enabled !== false;
  $("alert-form-title").textContent = "Edit rule " + rule.name;
  $("alert-submit").textContent = "Save changes";
  $("alert-cancel-edit").hidden = false;
  $("alert-form").scrollIntoView();
}

/**
 * The body the form describes. A new rule leaves out the empty fields; a change sends every
 * field, an empty one as null (which removes it).
 */
function alertBody(editing) {
  const body = {};
  for (const name of ALERT_TEXT_FIELDS) {
    const value = alertInput(name).value.trim();
    if (value) body[name] = value;
    else if (editing && name !== "name") body[name] = null;
    else if (name === "name") body[name] = value;
  }
  body.states = [...$("alert-states").querySelectorAll("input:checked")].map((b) => b.value);
  body.enabled = $("alert-enabled").checked;
  return body;
}

async function submitAlertRule(e) {
  e.preventDefault();
  clearAlertErrors();
  const id = $("alert-edit-id").value;
  const path = "/api/v1/alert-rules" + (id ? "/" + id : "");
  $("alert-submit").disabled = true;
  try {
    const { status, body: answer, res } = await send(id ? "PATCH" : "POST", path, alertBody(!!id));
    if (status === 200 || status === 201) {
      resetAlertForm();
      await loadAlerts();
      return;
    }
    const message = errorMessage(res, answer);
    if (status === 401 || status === 403) askForKey(message);
    const details = (answer && answer.error && answer.error.details) || [];
    if (status === 422 && details.length) {
      for (const d of details) {
        if (!alertFieldError(d.pointer, d.message)) alertFormError((d.pointer || "(rule)") + ": " + d.message);
      }
    } else {
      alertFormError(message);
    }
  } catch (err) {
    alertFormError("Could not reach the server: " + err.message);
  } finally {
    $("alert-submit").disabled = false;
  }
}

/** Enables, disables (PATCH) or deletes (DELETE) a rule, then shows the rules again. */
async function alertAction(button, method, id, payload) {
  button.disabled = true;
  $("alerts-error").hidden = true;
  try {
    const { status, body, res } = await send(method, "/api/v1/alert-rules/" + id, payload);
    if (!res.ok) {
      const message = errorMessage(res, body);
      if (status === 401 || status === 403) askForKey(message);
      throw new Error(status + ": " + message);
    }
    if ($("alert-edit-id").value === id && method === "DELETE") resetAlertForm();
    await loadAlerts();
  } catch (err) {
    $("alerts-error").textContent = "Could not change the rule: " + err.message;
    $("alerts-error").hidden = false;
    button.disabled = false;
  }
}

async function loadAlerts() {
  $("alerts-error").hidden = true;
  try {
    const rules = await api("/api/v1/alert-rules");
    const cards = await Promise.all(rules.items.map(alertRuleCard));
    $("alert-rules").replaceChildren(...cards);
    if (!cards.length) {
      $("alert-rules").append(el("p", { class: "empty" }, "No alert rules yet."));
    }
  } catch (e) {
    $("alerts-error").textContent = "Could not load alerts: " + e.message;
    $("alerts-error").hidden = false;
  }
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

const DEPLOYMENT_ROUTE = /^\/deployments\/([A-Za-z0-9_.%-]+)\/([A-Za-z0-9_.%-]+)$/;

const VIEWS = ["list-view", "run-view", "deployments-view", "deployment-view", "alerts-view"];

function showView(id) {
  for (const v of VIEWS) $(v).hidden = v !== id;
}

function route() {
  const id = routedRunId();
  const hash = location.hash.replace(/^#/, "");
  const deployment = hash.match(DEPLOYMENT_ROUTE);
  if (id) {
    showView("run-view");
    showRun(id);
  } else if (deployment) {
    showView("deployment-view");
    showDeployment(decodeURIComponent(deployment[1]), decodeURIComponent(deployment[2]));
  } else if (hash === "/deployments") {
    showView("deployments-view");
    loadDeployments(true);
  } else if (hash === "/alerts") {
    showView("alerts-view");
    loadAlerts();
  } else {
    showView("list-view");
    loadStats();
    loadDrops();
    loadRuns(true);
  }
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
  $("more-deployments").addEventListener("click", () => loadDeployments(false));
  $("log-level").addEventListener("change", () => loadLogs(true));
  $("run-version").addEventListener("change", renderForm);
  $("run-form").addEventListener("submit", submitRun);
  $("cancel-run").addEventListener("click", () => runAction("cancel"));
  $("retry-run").addEventListener("click", () => runAction("retry"));
  initKeyPanel();
  initAlertForm();
  window.addEventListener("hashchange", route);
  route();
  connectStream();
}

init();
