// The Flame dashboard. Plain JS, no framework: every second it fetches the JSON API of the
// page in view (#/ overview, #/session/ID[/STATE], #/node/ID) and redraws it. Numbers are shown as
// the daemon reports them; nothing is computed here but layout.
"use strict";

const view = document.getElementById("view");
const statusLine = document.getElementById("status");
const STATES = ["succeeded", "failed", "running", "pending", "cancelled"];

function esc(v) {
  return String(v ?? "-").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function clock(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : "-";
}

function duration(a, b) {
  if (!a || !b) return "-";
  const ms = Math.max(0, b - a);
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(ms < 60000 ? 2 : 0)} s`;
}

function bytes(n) {
  if (n == null) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function progress(s) {
  const total = STATES.reduce((n, k) => n + s[k], 0) || 1;
  const parts = STATES.map(
    (k) => `<span class="${k}" style="width:${(100 * s[k]) / total}%" title="${k}: ${s[k]}"></span>`
  );
  return `<div class="bar">${parts.join("")}</div>`;
}

function table(headers, rows) {
  const head = headers.map((h) => `<th>${esc(h)}</th>`).join("");
  const body = rows.map((r) => `<tr>${r.join("")}</tr>`).join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

function td(v, cls) {
  return `<td${cls ? ` class="${cls}"` : ""}>${esc(v)}</td>`;
}

function card(n, label) {
  return `<div class="card"><div class="n">${esc(n)}</div><div class="l">${esc(label)}</div></div>`;
}

function sessionRow(s) {
  return [
    `<td><a href="#/session/${s.id}">${esc(s.id)}</a></td>`, td(s.application), td(s.state),
    `<td>${progress(s)}</td>`, td(s.pending), td(s.running), td(s.succeeded), td(s.failed),
    td(s.cancelled), td(s.executors),
  ];
}

// Tasks finished per second over the last minutes, drawn on a canvas.
function drawChart(canvas, counts) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 30;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...counts);
  ctx.fillStyle = "#666";
  ctx.font = "11px sans-serif";
  ctx.fillText(`${max}/s`, 2, 12);
  ctx.fillText("0", 2, h - pad + 4);
  ctx.fillText(`-${counts.length}s`, pad, h - 8);
  ctx.fillText("now", w - 24, h - 8);
  ctx.strokeStyle = "#e07000";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  counts.forEach((c, i) => {
    const x = pad + ((w - pad - 4) * i) / Math.max(1, counts.length - 1);
    const y = h - pad - ((h - pad - 16) * c) / max;
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

async function api(path) {
  const r = await fetch(path, { cache: "no-store" });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

async function overviewPage() {
  const o = await api("/api/overview");
  const busy = o.executors.filter((e) => e.inflight > 0).length;
  const recent = o.tasks_per_second.slice(-10);
  const rate = recent.reduce((a, b) => a + b, 0) / recent.length;
  // Objects on nodes (#12): what the directory says each node holds, and its store's size.
  const stores = new Map((o.objects || []).map((s) => [s.node_id, s]));
  const nodes = o.nodes.map((n) => {
    const s = stores.get(n.id);
    return [
      `<td><a href="#/node/${n.id}">${esc(n.id)}</a></td>`, td(n.name), td(n.alive ? "alive" : "lost"),
      td(n.slots), td(n.executors), td(n.busy), td(s ? s.objects : "-"),
      td(s ? bytes(s.memory_bytes + s.spilled_bytes) : "-"),
    ];
  });
  view.innerHTML = `
    <div class="cards">
      ${card(o.nodes.filter((n) => n.alive).length, "nodes")}
      ${card(`${busy} / ${o.executors.length}`, "executors busy")}
      ${card(o.executors.length - busy, "executors idle")}
      ${card(o.sessions_open, "open sessions")}
      ${card(o.tasks_pending, "tasks pending")}
      ${card(o.tasks_running, "tasks running")}
      ${card(rate.toFixed(1), "tasks/s (last 10 s)")}
    </div>
    <h2>Tasks finished per second</h2>
    <canvas id="chart" width="900" height="160"></canvas>
    <h2>Sessions</h2>
    <div class="legend">${STATES.map((k) => `<span class="${k}"></span>${k}`).join("")}</div>
    ${table(["id", "application", "state", "progress", "pending", "running", "succeeded",
             "failed", "cancelled", "executors"], o.sessions.map(sessionRow))}
    <h2>Nodes</h2>
    ${table(["id", "name", "state", "slots", "executors", "busy", "objects", "object bytes"], nodes)}`;
  // The daemon keeps 5 minutes; the last 2 are what a glance needs.
  drawChart(document.getElementById("chart"), o.tasks_per_second.slice(-120));
}

function taskLink(t) {
  return `<a href="#/task/${t.session_id}/${t.task_id}">${esc(t.task_id)}</a>`;
}

function taskRow(t) {
  return [
    `<td>${taskLink(t)}</td>`, td(t.state, `state-${t.state}`), td(t.attempts), td(clock(t.created_ms)),
    td(duration(t.created_ms, t.started_ms)), td(duration(t.started_ms, t.finished_ms)),
    t.executor_id ? td(t.executor_id) : td("-"),
    t.node_id ? `<td><a href="#/node/${t.node_id}">${esc(t.node_id)}</a></td>` : td("-"),
    td(t.error ? `${t.error.kind}: ${t.error.message}` : "", "err"),
  ];
}

// A session's page; `state` (from #/session/ID/STATE) shows only the tasks in that state.
async function sessionPage(id, state) {
  const filter = STATES.includes(state) ? `&state=${state}` : "";
  const d = await api(`/api/sessions/${id}?limit=200${filter}`);
  const s = d.session;
  const failures = d.failures.map(
    (t) => `<h3>task ${taskLink(t)} — ${esc(t.error?.kind)}: ${esc(t.error?.message)}</h3>
            <pre class="tb">${esc(t.error?.traceback || "(no traceback)")}</pre>`
  );
  view.innerHTML = `
    <h2>Session ${esc(s.id)} · ${esc(s.application)} · ${esc(s.state)}</h2>
    <div class="cards">
      ${STATES.map((k) => `<a href="#/session/${s.id}/${k}">${card(s[k], k)}</a>`).join("")}
      ${card(s.executors, "executors")}
    </div>
    <p>${progress(s)}</p>
    <h2>${filter ? `${esc(state)} tasks` : "Tasks"} (${d.tasks.length} of ${d.total})
      ${filter ? `<a href="#/session/${s.id}">show all</a>` : "· click a count to filter"}</h2>
    ${table(["task", "state", "attempts", "submitted", "queued", "ran", "executor", "node",
             "error"], d.tasks.map(taskRow))}
    <h2>Failures</h2>
    ${failures.join("") || "<p>none</p>"}`;
}

// One task: its timings, where it ran, its error and what it printed.
async function taskPage(sid, tid) {
  const t = await api(`/api/sessions/${sid}/tasks/${tid}`);
  const rows = [
    ["session", `<a href="#/session/${t.session_id}">${esc(t.session_id)}</a>`],
    ["state", esc(t.state)], ["attempts", esc(t.attempts)],
    ["submitted", esc(clock(t.created_ms))],
    ["queued", esc(duration(t.created_ms, t.started_ms))],
    ["ran", esc(duration(t.started_ms, t.finished_ms))],
    ["executor", esc(t.executor_id ?? "-")],
    ["node", t.node_id ? `<a href="#/node/${t.node_id}">${esc(t.node_id)}</a>` : "-"],
  ].map(([k, v]) => [td(k), `<td>${v}</td>`]);
  const error = t.error
    ? `<h2>Error</h2><h3>${esc(t.error.kind)}: ${esc(t.error.message)}</h3>
       <pre class="tb">${esc(t.error.traceback || "(no traceback)")}</pre>`
    : "";
  view.innerHTML = `
    <h2>Task ${esc(t.task_id)} of session ${esc(t.session_id)}</h2>
    ${table(["", ""], rows)}
    ${error}
    <h2>Output</h2>
    <pre class="log">${esc(t.log || "(printed nothing)")}</pre>`;
}

async function nodePage(id) {
  const d = await api(`/api/nodes/${id}`);
  const n = d.node;
  const rows = d.executors.map((e) => [
    td(e.id), td(e.state),
    e.session_id ? `<td><a href="#/session/${e.session_id}">${esc(e.session_id)}</a></td>` : td("-"),
    td(e.inflight),
  ]);
  view.innerHTML = `
    <h2>Node ${esc(n.id)} · ${esc(n.name)} · ${n.alive ? "alive" : "lost"}</h2>
    <div class="cards">${card(n.slots, "slots")}${card(n.executors, "executors")}${card(n.busy, "busy")}</div>
    <h2>Executors</h2>
    ${table(["executor", "state", "session", "tasks in flight"], rows)}`;
}

async function refresh() {
  const [, page, id, state] = (location.hash || "#/").split("/");
  try {
    if (page === "session") await sessionPage(id, state);
    else if (page === "task") await taskPage(id, state);
    else if (page === "node") await nodePage(id);
    else await overviewPage();
    statusLine.textContent = `updated ${new Date().toLocaleTimeString()}`;
    statusLine.className = "muted";
  } catch (e) {
    statusLine.textContent = `cannot load: ${e.message}`;
    statusLine.className = "error";
  }
}

window.addEventListener("hashchange", refresh);
refresh();
setInterval(refresh, 1000);
