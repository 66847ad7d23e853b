// cryoclass dashboard: fetches api/state when the server says the job changed (server-sent
// events; polling if they fail) and updates the page in place: existing cards, text and images
// are changed, never rebuilt, so nothing flickers.
"use strict";

const $ = (id) => document.getElementById(id);
const fmt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
const NS = "http://www.w3.org/2000/svg";
let shown = null;          // version of the state on the page
let current = null;        // that state
let fetching = false, again = false;
const cards = new Map();   // track id -> card element

// ---------------------------------------------------------------- fetching
async function refresh() {
  if (fetching) { again = true; return; }
  fetching = true;
  try {
    const r = await fetch("api/state", { cache: "no-store" });
    if (r.ok) {
      const s = await r.json();
      if (s.version !== shown) { render(s); shown = s.version; current = s; }
      $("live").classList.add("on");
    }
  } catch (e) {
    $("live").classList.remove("on");
  } finally {
    fetching = false;
    if (again) { again = false; refresh(); }
  }
}

function listen() {
  let polling = null;
  const es = new EventSource("api/events");
  es.addEventListener("version", () => refresh());
  es.onopen = () => { if (polling) { clearInterval(polling); polling = null; } };
  es.onerror = () => {
    $("live").classList.remove("on");
    if (!polling) polling = setInterval(refresh, 2000);  // until the event stream is back
  };
  setInterval(refresh, 15000);  // belt and braces
}

async function post(path, body) {
  const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                body: JSON.stringify(body || {}) });
  const j = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(j.error || r.statusText);
  return j;
}

// ---------------------------------------------------------------- rendering
function render(s) {
  $("job-name").textContent = s.job;
  $("job-name").title = s.path;
  $("job-kind").textContent = s.kind === "stream" ? "streaming" : "batch";
  renderProgress(s);
  renderClasses(s.classes);
  renderSelection(s.selection, s.classes);
  renderParams(s.params);
  renderPlots(s);
  $("updated").textContent = "updated " + new Date(s.time * 1000).toLocaleTimeString();
}

function setText(id, text) { const el = $(id); if (el.textContent !== text) el.textContent = text; }

function renderProgress(s) {
  const p = s.progress;
  const st = $("job-status");
  const running = !p.finished;
  st.textContent = p.finished ? "finished" : (p.updates || s.classes.items.length ? "running" : "waiting");
  st.className = "pill " + (p.finished ? "finished" : "running");
  setText("p-found", fmt(p.found));
  $("found-label").title = "counted from: " + p.found_from;
  setText("p-ingested", fmt(p.ingested !== undefined ? p.ingested : p.classified));
  setText("p-classified", fmt(p.classified));
  setText("p-set-aside", fmt(p.set_aside));
  setText("p-reasons", (p.set_aside_reasons || []).slice(0, 3).map(([k, n]) => `${n} × ${k}`).join("; "));
  if (s.kind === "stream") {
    setText("p-throughput", p.throughput_recent_per_s != null ? `${fmt(p.throughput_recent_per_s)}/s` : "–");
    setText("p-throughput-sub", p.throughput_per_s != null ? `classified, last min · ${fmt(p.throughput_per_s)}/s overall` : "particles classified per s");
    const lat = p.latency_s;
    setText("p-latency", lat ? `${lat.mean.toFixed(1)} s` : "–");
    setText("p-latency-sub", lat ? `mean of last update · max ${lat.max.toFixed(1)} s` : "");
    setText("updates-label", "updates");
    setText("p-updates", fmt(p.updates));
    let ago = "";
    if (p.last_event_time && running) ago = ` · ${Math.max(0, Math.round(s.time - p.last_event_time))} s ago`;
    setText("p-phase", `${p.phase || ""}${p.policy ? " · " + p.policy : ""}${ago}`);
  } else {
    setText("p-throughput", "–"); setText("p-throughput-sub", "streaming jobs only");
    setText("p-latency", "–"); setText("p-latency-sub", "streaming jobs only");
    setText("updates-label", "iterations");
    setText("p-updates", p.total_steps ? `${p.step} / ${p.total_steps}` : "–");
    setText("p-phase", p.phase || "");
  }
}

function renderClasses(c) {
  const grid = $("grid");
  $("no-classes").style.display = c.items.length ? "none" : "";
  const src = c.source === "checkpoint" ? " · in progress (from the checkpoint; counts approximate)" : "";
  setText("classes-sub", c.items.length ? `${c.items.length} classes · ${fmt(c.total)} particles${src}` : "");
  const keep = new Set();
  c.items.forEach((it, i) => {
    keep.add(it.track);
    let el = cards.get(it.track);
    if (!el) { el = makeCard(); cards.set(it.track, el); }
    updateCard(el, it, c.source === "outputs");
    if (grid.children[i] !== el) grid.insertBefore(el, grid.children[i] || null);
  });
  for (const [track, el] of cards) {
    if (!keep.has(track)) { el.remove(); cards.delete(track); }
  }
}

function makeCard() {
  const el = document.createElement("button");
  el.type = "button";
  el.className = "card";
  el.innerHTML = '<img alt=""><span class="num"></span><span class="badge"></span>' +
                 '<div class="meta"><span class="count"></span><span class="res"></span></div>';
  el.addEventListener("click", () => cycleMark(el));
  return el;
}

function updateCard(el, it, selectable) {
  el.dataset.number = it.number;
  el.dataset.count = it.count;
  el.dataset.track = it.track;
  el.dataset.mark = it.mark || "";
  el.disabled = !selectable;
  el.setAttribute("aria-pressed", it.mark === "good" ? "true" : "false");
  el.title = `class ${it.number}: ${it.count} particles (${(100 * it.fraction).toFixed(1)} %), ` +
             `estimated resolution ${it.res_A != null ? it.res_A.toFixed(1) + " Å" : "unknown"}`;
  el.querySelector(".num").textContent = "#" + it.number;
  el.querySelector(".badge").textContent = it.mark === "good" ? "✓" : it.mark === "bad" ? "✗" : "";
  el.querySelector(".count").textContent = `${fmt(it.count)} ptcls`;
  el.querySelector(".res").textContent = it.res_A != null ? `${it.res_A.toFixed(1)} Å` : "";
  const img = el.querySelector("img");
  if (img.dataset.src !== it.image) {
    // Load the new average off-screen, then swap: the old one stays until the new is ready.
    const next = new Image();
    next.onload = () => { img.src = next.src; };
    next.src = it.image;
    img.dataset.src = it.image;
    img.alt = `class ${it.number}`;
  }
}

async function cycleMark(el) {
  const order = ["", "good", "bad"];
  const mark = order[(order.indexOf(el.dataset.mark) + 1) % order.length];
  el.dataset.mark = mark;  // at once; the server's state follows
  try {
    await post("api/mark", { number: Number(el.dataset.number), mark: mark || null });
  } catch (e) {
    $("export-result").textContent = "Could not mark: " + e.message;
  }
  refresh();
}

function renderSelection(sel, c) {
  const total = c.total || 0;
  let text;
  if (!sel.enabled) text = "Selection opens once the job has written its particles.";
  else if (!sel.good.length) text = `No class marked good (${sel.bad.length} bad).`;
  else text = `${sel.good.length} good classes: ${fmt(sel.n_good_particles)} of ${fmt(total)} particles (${total ? (100 * sel.n_good_particles / total).toFixed(1) : 0} %); ${sel.bad.length} bad.`;
  setText("sel-summary", text);
  for (const id of ["auto-select", "clear-marks"]) $(id).disabled = !sel.enabled;
  $("export").disabled = !sel.enabled || !sel.good.length;
  const ex = sel.last_export;
  if (ex && ex.time !== renderSelection.lastExport) {
    renderSelection.lastExport = ex.time;
    const res = $("export-result");
    res.textContent = `Exported ${fmt(ex.n_particles)} particles of classes ${ex.classes.join(", ")}: `;
    for (const name of [ex.star, ex.cs].filter(Boolean)) {
      const a = document.createElement("a");
      a.href = "api/files/" + encodeURIComponent(name);
      a.textContent = name;
      a.setAttribute("download", name);
      res.append(a, " ");
    }
  }
}

function renderParams(params) {
  const text = JSON.stringify(params);
  if (renderParams.last === text) return;
  renderParams.last = text;
  const t = $("params");
  t.replaceChildren();
  for (const k of Object.keys(params).sort()) {
    const tr = t.insertRow();
    tr.insertCell().textContent = k;
    const v = params[k];
    tr.insertCell().textContent = v === null ? "off" : typeof v === "object" ? JSON.stringify(v) : String(v);
  }
}

// ---------------------------------------------------------------- plots (plain SVG)
const W = 480, H = 220, M = { l: 46, r: 40, t: 10, b: 26 };

function svgEl(tag, attrs, parent) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

function extent(vals) {
  const v = vals.filter((x) => x !== null && Number.isFinite(x));
  if (!v.length) return null;
  let lo = Math.min(...v), hi = Math.max(...v);
  if (hi === lo) { lo -= 1; hi += 1; }
  return [lo, hi];
}

function axes(g, xr, yr, xlabel, right) {
  svgEl("line", { x1: M.l, y1: H - M.b, x2: W - M.r, y2: H - M.b, class: "axis" }, g);
  svgEl("line", { x1: M.l, y1: M.t, x2: M.l, y2: H - M.b, class: "axis" }, g);
  const t = (x, y, s, anchor) => { const e = svgEl("text", { x, y, "text-anchor": anchor }, g); e.textContent = s; };
  const n = (v) => Math.abs(v) >= 1000 ? v.toExponential(1) : Number(v.toPrecision(3)).toString();
  t(M.l - 4, M.t + 8, n(yr[1]), "end"); t(M.l - 4, H - M.b, n(yr[0]), "end");
  t(M.l, H - 8, n(xr[0]), "start"); t(W - M.r, H - 8, n(xr[1]), "end");
  t((M.l + W - M.r) / 2, H - 8, xlabel, "middle");
  if (right) { t(W - M.r + 4, M.t + 8, n(right[1]), "start"); t(W - M.r + 4, H - M.b, n(right[0]), "start"); }
}

function scale(r, a, b) { return (v) => a + (b - a) * (v - r[0]) / (r[1] - r[0]); }

function pathOf(xs, ys, sx, sy) {
  let d = "", pen = false;
  xs.forEach((x, i) => {
    const y = ys[i];
    if (y === null || y === undefined || !Number.isFinite(y)) { pen = false; return; }
    d += (pen ? "L" : "M") + sx(x).toFixed(1) + "," + sy(y).toFixed(1);
    pen = true;
  });
  return d;
}

function empty(svg, msg) {
  const g = svgEl("g", {});
  const e = svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, g);
  e.textContent = msg;
  svg.replaceChildren(g);
}

// lines: [{ys, color, label, axis: 'left'|'right'}]
function lineChart(svg, xs, lines, xlabel) {
  const xr = extent(xs);
  const left = lines.filter((l) => l.axis !== "right"), right = lines.filter((l) => l.axis === "right");
  const yl = extent(left.flatMap((l) => l.ys)), yr = extent(right.flatMap((l) => l.ys));
  if (!xr || !(yl || yr)) { empty(svg, "no data yet"); return; }
  const g = svgEl("g", {});
  axes(g, xr, yl || yr, xlabel, yl && yr ? yr : null);
  const sx = scale(xr, M.l, W - M.r);
  lines.forEach((l, i) => {
    const r = l.axis === "right" && yl ? yr : (yl || yr);
    if (!r) return;
    const sy = scale(r, H - M.b, M.t);
    svgEl("path", { d: pathOf(xs, l.ys, sx, sy), fill: "none", stroke: l.color, "stroke-width": 1.8 }, g);
    const lab = svgEl("text", { x: M.l + 6 + 120 * i, y: M.t + 10, style: `fill:${l.color}` }, g);
    lab.textContent = l.label;
  });
  svg.replaceChildren(g);
}

function color(i, n) { return `hsl(${Math.round((360 * i) / Math.max(n, 1) * 0.61803 * 7) % 360} 65% 58%)`; }

function stackedArea(svg, d) {
  if (!d.t || d.t.length < 2) { empty(svg, "no history yet"); return; }
  const xr = extent(d.t), g = svgEl("g", {});
  axes(g, xr, [0, 1], "time (s)");
  const sx = scale(xr, M.l, W - M.r), sy = scale([0, 1], H - M.b, M.t);
  const order = d.series.map((_, j) => j).sort((a, b) => d.labels[a] - d.labels[b]);
  const base = d.t.map(() => 0);
  order.forEach((j) => {
    const top = base.map((b, i) => b + d.series[j][i]);
    let p = "M" + d.t.map((t, i) => sx(t).toFixed(1) + "," + sy(top[i]).toFixed(1)).join("L");
    p += "L" + d.t.map((t, i) => sx(t).toFixed(1) + "," + sy(base[i]).toFixed(1)).reverse().join("L") + "Z";
    const a = svgEl("path", { d: p, fill: color(d.labels[j] - 1, d.series.length), "fill-opacity": 0.85 }, g);
    const title = svgEl("title", {}, a);
    title.textContent = `class ${d.labels[j]} (current number)`;
    top.forEach((v, i) => { base[i] = v; });
  });
  order.slice(0, 12).forEach((j, i) => {  // legend: the classes' current numbers
    const e = svgEl("text", { x: W - M.r + 6, y: M.t + 10 + 12 * i, style: `fill:${color(d.labels[j] - 1, d.series.length)}` }, g);
    e.textContent = "#" + d.labels[j];
  });
  svg.replaceChildren(g);
}

function renderPlots(s) {
  const h = s.history;
  stackedArea($("plot-dist"), s.distribution);
  const changed = (h.class_changes || []).map((v) => (v === null ? null : 100 * v));
  lineChart($("plot-loglik"), h.x, [
    { ys: h.mean_loglik, color: "#4ea1ff", label: "mean log-likelihood" },
    { ys: changed, color: "#c792ea", label: "changed class (%)", axis: "right" }], h.x_label);
  lineChart($("plot-res"), h.x, [
    { ys: h.work_res_A, color: "#3ecf75", label: "resolution (Å)" },
    { ys: h.temperature, color: "#f0b429", label: "temperature", axis: "right" }], h.x_label);
  if (s.kind === "stream") {
    lineChart($("plot-latency"), h.x, [{ ys: h.latency_mean_s, color: "#ff8a65", label: "mean latency (s)" }], h.x_label);
  } else {
    empty($("plot-latency"), "streaming jobs only");
  }
  const files = $("files");
  if (!files.childElementCount) {
    for (const name of ["particles.star", "particles.cs", "classes.mrcs", "model.star", "rejects.csv", "config.json"]) {
      const a = document.createElement("a");
      a.href = "api/files/" + name; a.textContent = name;
      files.append(a, " ");
    }
  }
}

// ---------------------------------------------------------------- controls
$("auto-select").addEventListener("click", async () => {
  const min = Number($("auto-min-count").value || 0);
  const res = $("auto-max-res").value;
  try {
    await post("api/autoselect", { min_count: min, max_res_A: res === "" ? null : Number(res) });
  } catch (e) { $("export-result").textContent = "Auto-select failed: " + e.message; }
  refresh();
});
$("clear-marks").addEventListener("click", async () => { await post("api/clear"); refresh(); });
$("export").addEventListener("click", async () => {
  const res = $("export-result");
  res.textContent = "Exporting…";
  try { await post("api/export"); renderSelection.lastExport = null; shown = null; }
  catch (e) { res.textContent = "Export failed: " + e.message; }
  refresh();
});

refresh();
listen();
