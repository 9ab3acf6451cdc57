// The live page: polls /status every second and redraws. No framework, no
// network access beyond this replica. Values from the status go through
// textContent only, never through HTML.
"use strict";

const COLORS = ["#2266cc", "#dd6622", "#22994a", "#aa33aa", "#999922", "#22aaaa", "#cc3344", "#666666"];
const $ = (id) => document.getElementById(id);
let sampleStep = -1;

function text(id, v) {
  const el = $(id);
  if (el.textContent !== String(v)) el.textContent = String(v);
}

function fmtSeconds(s) {
  if (s === undefined || s === null) return "–";
  if (s < 1) return (s * 1000).toFixed(1) + " ms";
  return s.toFixed(2) + " s";
}

function fmtNum(v) {
  if (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0)) return v.toExponential(2);
  return v.toFixed(3);
}

function cell(tr, v, cls) {
  const td = document.createElement("td");
  td.textContent = v;
  if (cls) td.className = cls;
  tr.appendChild(td);
}

function renderMembers(st) {
  const tbody = $("members").querySelector("tbody");
  const rows = [];
  for (const m of st.members || []) {
    const tr = document.createElement("tr");
    tr.className = m.state;
    tr.dataset.node = m.id;
    cell(tr, m.id);
    cell(tr, m.host);
    cell(tr, m.state, "state-" + m.state);
    cell(tr, m.rank >= 0 ? m.rank : "–");
    const sp = m.rank >= 0 && st.generation.split ? st.generation.split[m.rank] : null;
    cell(tr, sp ? "[" + sp.lo + ", " + sp.hi + ")" : "–");
    cell(tr, m.joined_gen || "–");
    const last = m.last || null;
    cell(tr, last ? last.step : "–");
    cell(tr, last ? fmtSeconds(last.step_seconds) : "–");
    cell(tr, last ? fmtSeconds(last.allreduce_seconds) : "–");
    const losses = last && last.losses ? Object.keys(last.losses).sort().map((k) => k + " " + fmtNum(last.losses[k])).join(", ") : "";
    cell(tr, losses);
    rows.push(tr);
  }
  tbody.replaceChildren(...rows);
}

// plot draws series ({name, points: [[x, y]…]}) on a canvas with axes.
function plot(canvas, series, yfmt) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 56, R = 10, T = 10, B = 26;
  ctx.clearRect(0, 0, W, H);
  let xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity;
  for (const s of series) for (const [x, y] of s.points) {
    xmin = Math.min(xmin, x); xmax = Math.max(xmax, x);
    ymin = Math.min(ymin, y); ymax = Math.max(ymax, y);
  }
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#778";
  if (!isFinite(xmin)) {
    ctx.fillText("no committed steps yet", L + 10, H / 2);
    return;
  }
  if (xmax === xmin) xmax = xmin + 1;
  if (ymax === ymin) { ymax += Math.abs(ymax) * 0.1 + 1e-9; ymin -= Math.abs(ymin) * 0.1 + 1e-9; }
  const pad = (ymax - ymin) * 0.05;
  ymin -= pad; ymax += pad;
  const sx = (x) => L + (x - xmin) / (xmax - xmin) * (W - L - R);
  const sy = (y) => H - B - (y - ymin) / (ymax - ymin) * (H - T - B);
  ctx.strokeStyle = "#e3e6ea";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = ymin + (ymax - ymin) * i / 4;
    ctx.beginPath(); ctx.moveTo(L, sy(y)); ctx.lineTo(W - R, sy(y)); ctx.stroke();
    ctx.fillText(yfmt(y), 4, sy(y) + 4);
  }
  ctx.fillText("step " + xmin, L, H - 8);
  const last = "step " + xmax;
  ctx.fillText(last, W - R - ctx.measureText(last).width, H - 8);
  series.forEach((s, i) => {
    ctx.strokeStyle = COLORS[i % COLORS.length];
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    s.points.forEach(([x, y], j) => (j ? ctx.lineTo(sx(x), sy(y)) : ctx.moveTo(sx(x), sy(y))));
    ctx.stroke();
  });
}

function renderCharts(st) {
  const hist = st.history || [];
  const names = [...new Set(hist.flatMap((p) => Object.keys(p.losses || {})))].sort();
  plot($("losses"), names.map((n) => ({ name: n, points: hist.filter((p) => p.losses && n in p.losses).map((p) => [p.step, p.losses[n]]) })), fmtNum);
  const legend = $("loss-legend");
  const items = names.map((n, i) => {
    const span = document.createElement("span");
    const key = document.createElement("span");
    key.className = "key k" + (i % COLORS.length);
    span.append(key, document.createTextNode(n));
    return span;
  });
  legend.replaceChildren(...items);
  plot($("times"), [
    { name: "step", points: hist.map((p) => [p.step, p.step_seconds]) },
    { name: "allreduce", points: hist.map((p) => [p.step, p.allreduce_seconds]) },
  ], (y) => fmtSeconds(Math.max(0, y)));
}

function renderSample(st) {
  const s = st.sample;
  if (!s || s.step === sampleStep) return;
  sampleStep = s.step;
  const img = $("sample");
  img.src = "samples/latest.png?step=" + s.step;
  img.hidden = false;
  text("sample-caption", "step " + s.step + " from " + s.node + " (" + Math.round(s.bytes / 1024) + " KiB)");
}

function renderLists(st) {
  const cks = (st.checkpoints || []).slice().reverse().map((c) => {
    const li = document.createElement("li");
    const size = c.files.reduce((a, f) => a + f.size, 0);
    li.textContent = "step " + c.step + ": " + c.files.length + " files, " + (size / 1048576).toFixed(2) + " MiB";
    return li;
  });
  if (cks.length) $("checkpoints").replaceChildren(...cks);
  const reps = (st.replicas || []).map((r) => {
    const li = document.createElement("li");
    li.textContent = r.id + " " + r.addr + (r.id === st.leader ? " (leader)" : "");
    return li;
  });
  $("replicas").replaceChildren(...reps);
}

function render(st) {
  text("job", st.job);
  const badge = $("status");
  text("status", st.status || "no job");
  badge.className = "badge " + (st.status || "");
  text("leader", st.leader || "none");
  text("term", st.term);
  text("replica", st.replica);
  text("raft-state", st.raft_state);
  const reason = $("reason");
  reason.hidden = !st.reason;
  text("reason", st.reason || "");
  text("step", st.committed);
  const spec = st.spec || {};
  text("max-steps", spec.max_steps ? "of " + spec.max_steps : "");
  text("gen", st.generation.gen);
  text("gen-start", st.generation.gen ? "from step " + st.generation.start : "");
  text("world", (st.generation.ring || []).length);
  text("batch", spec.global_batch ? "global batch " + spec.global_batch : "");
  text("rate", st.samples_per_second.toFixed(1));
  const d = st.dropped;
  text("dropped", d.stale + d.foreign + d.invalid + st.malformed);
  text("dropped-detail", "stale " + d.stale + " · foreign " + d.foreign + " · invalid " + d.invalid + " · malformed " + st.malformed);
  renderMembers(st);
  renderCharts(st);
  renderSample(st);
  renderLists(st);
}

async function poll() {
  try {
    const r = await fetch("status?history=500", { cache: "no-store" });
    if (!r.ok) throw new Error("status " + r.status);
    render(await r.json());
    text("conn", "");
  } catch (e) {
    text("conn", "disconnected: " + e.message);
  }
  setTimeout(poll, 1000);
}

poll();
