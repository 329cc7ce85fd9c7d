// The agentcloud console: one page, no build step. It reads the management and usage APIs with the key the
// admin enters (kept in this tab's sessionStorage, or given once in the URL fragment: #key=...).
"use strict";

const $ = (id) => document.getElementById(id);
const money = (v) => "$" + Number(v || 0).toFixed(2);
let key = sessionStorage.getItem("agentcloud-key") || "";

const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("key")) {
  key = fragment.get("key");
  sessionStorage.setItem("agentcloud-key", key);
  history.replaceState(null, "", location.pathname);  // the key does not stay in the address bar
}
if (fragment.get("window")) $("window").value = fragment.get("window");

async function api(path) {
  const answer = await fetch(path, { headers: { Authorization: "Bearer " + key } });
  const body = await answer.json();
  if (!answer.ok) throw new Error((body.error && body.error.message) || answer.status);
  return body;
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
}

function chart(svg, points, series) {
  // series: [[field, label]]; a line per series over the timeline's points
  const w = 600, h = 180, pad = 30;
  svg.textContent = "";
  const values = series.flatMap(([f]) => points.map((p) => p[f] || 0));
  const top = Math.max(0, ...values);
  const max = top || 1;
  const ns = "http://www.w3.org/2000/svg";
  const axis = document.createElementNS(ns, "line");
  Object.entries({ x1: pad, y1: h - pad, x2: w - 5, y2: h - pad, class: "axis" }).forEach(([k, v]) => axis.setAttribute(k, v));
  svg.appendChild(axis);
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", 2); label.setAttribute("y", 12); label.setAttribute("class", "label");
  label.textContent = top >= 100 ? String(Math.round(top)) : top ? top.toPrecision(3) : "0";
  svg.appendChild(label);
  let nonzero = 0;
  series.forEach(([field], i) => {
    const line = document.createElementNS(ns, "polyline");
    const xy = points.map((p, j) => {
      if (p[field] === null || p[field] === undefined) return null;  // no requests then: no latency to draw
      const v = p[field];
      if (v) nonzero += 1;
      const x = pad + (j * (w - pad - 5)) / Math.max(1, points.length - 1);
      const y = h - pad - (v / max) * (h - pad - 15);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    line.setAttribute("points", xy.filter((p) => p !== null).join(" "));
    line.setAttribute("class", "s" + i);
    svg.appendChild(line);
  });
  svg.dataset.nonzero = String(nonzero);
  svg.dataset.points = String(points.length);
}

async function show() {
  if (!key) return;
  const window = $("window").value;
  $("status").textContent = "loading...";
  try {
    const [deps, usage] = await Promise.all([
      api("/api/v1/public/deployments"),
      api("/api/v1/public/inference/metrics?window=" + encodeURIComponent(window)),
    ]);
    const body = $("deployments").tBodies[0];
    body.textContent = "";
    const breaches = [];
    for (const d of deps.data) {
      const sla = await api("/api/v1/public/deployments/" + d.id + "/sla").catch(() => ({ breached: [], history: [] }));
      for (const e of sla.history || []) if (e.event === "breach") breaches.push([d.name, e]);
      const row = body.insertRow();
      cell(row, d.name);
      cell(row, d.model_id);
      cell(row, d.gpu_type || "-");
      cell(row, d.status);
      cell(row, String((d.endpoints || []).length));
      cell(row, money(d.cost && d.cost.rate_usd_per_hour));
      cell(row, money(d.cost && d.cost.to_date_usd));
      cell(row, (sla.breached || []).length ? "breached: " + sla.breached.join(", ") : "ok", (sla.breached || []).length ? "breached" : "");
    }
    const points = usage.timeline.points;
    chart($("chart-requests"), points, [["requests", "requests"]]);
    chart($("chart-latency"), points, [["p50_ms", "p50"], ["p95_ms", "p95"]]);
    chart($("chart-tokens"), points, [["tokens", "tokens"]]);
    chart($("chart-errors"), points, [["errors", "errors"]]);
    const models = $("models").tBodies[0];
    models.textContent = "";
    for (const [name, m] of Object.entries(usage.models)) {
      const row = models.insertRow();
      [name, m.requests, m.errors, m.prompt_tokens + m.completion_tokens, m.latency_ms.p50 ?? "-", m.latency_ms.p95 ?? "-", money(m.cost_usd)]
        .forEach((v) => cell(row, String(v)));
    }
    const list = $("breaches");
    list.textContent = "";
    for (const [name, e] of breaches.slice(-20).reverse()) {
      const li = document.createElement("li");
      li.textContent = new Date(e.at * 1000).toLocaleString() + " " + name + ": " + e.metric + " " + (e.value ?? "") + " over " + (e.target ?? "");
      list.appendChild(li);
    }
    if (!breaches.length) list.innerHTML = '<li class="muted">none</li>';
    $("status").textContent = "org " + usage.org_id + ", " + window + ", updated " + new Date().toLocaleTimeString();
    document.body.dataset.ready = "1";
  } catch (err) {
    $("status").textContent = "error: " + err.message;
    document.body.dataset.ready = "error";
  }
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  if ($("key").value) {
    key = $("key").value;
    sessionStorage.setItem("agentcloud-key", key);
    $("key").value = "";
  }
  show();
});
$("window").addEventListener("change", show);
show();
setInterval(show, 30000);
