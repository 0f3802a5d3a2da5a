// telesurg dashboard: one WebSocket (JSON updates + JPEG frames), canvas plots, no dependencies.
"use strict";
const PATH_COLORS = ["#36c5f0", "#f7a541", "#b58cff", "#9be15d", "#ff7eb6", "#6ee7e7"];
const SEV_COLOR = { up: "#3ecf8e", degraded: "#f5b94a", down: "#ff5d5d" };
const S = { paths: new Map(), delay: new Map(), events: [], view: null, windowS: 300, serverSkew: 0, lastFrame: 0,
            frameTimes: [] };
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const fmt = (v, d = 1) => (v === null || v === undefined || Number.isNaN(v) ? "—" : Number(v).toFixed(d));
const hms = (t) => new Date(t * 1000).toISOString().substring(11, 19);

function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  ws.binaryType = "blob";
  ws.onopen = () => { $("conn").className = "conn on"; $("conn").textContent = "live"; };
  ws.onclose = () => {
    $("conn").className = "conn off"; $("conn").textContent = "reconnecting";
    setTimeout(connect, 1000);
  };
  ws.onmessage = (m) => (typeof m.data === "string" ? onState(JSON.parse(m.data)) : onFrame(m.data));
}

function onFrame(blob) {
  const img = $("endoscope");
  const old = img.src;
  img.src = URL.createObjectURL(blob);
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  $("video-empty").style.display = "none";
  S.lastFrame = Date.now() / 1000;
  S.frameTimes.push(S.lastFrame);
  while (S.frameTimes.length && S.frameTimes[0] < S.lastFrame - 3) S.frameTimes.shift();
}

function merge(map, key, info, points) {
  let entry = map.get(key);
  if (!entry) { entry = { info, points: [] }; map.set(key, entry); }
  entry.info = info;
  const last = entry.points.length ? entry.points[entry.points.length - 1][0] : -Infinity;
  for (const p of points) if (p[0] > last) entry.points.push(p);
}

function onState(v) {
  if (v.type === "history") {  // a new page's past, in chunks after the snapshot
    const entry = (v.kind === "path" ? S.paths : S.delay).get(v.key);
    if (entry) { merge(v.kind === "path" ? S.paths : S.delay, v.key, entry.info, v.points); scheduleRender(); }
    return;
  }
  if (v.type === "snapshot") { S.paths.clear(); S.delay.clear(); S.events = []; }
  S.view = v;
  S.serverSkew = Date.now() / 1000 - v.now;
  for (const p of v.paths) merge(S.paths, p.key, p, p.points);
  for (const d of v.delay.series) merge(S.delay, d.peer, d, d.points);
  const horizon = v.now - v.window_s;
  for (const map of [S.paths, S.delay]) for (const e of map.values()) {
    let i = 0; while (i < e.points.length && e.points[i][0] < horizon) i++;
    if (i) e.points.splice(0, i);
  }
  S.events = S.events.concat(v.events).slice(-200);
  render();
}

let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => { renderPending = false; if (S.view) render(); });
}

function pathLabel(info, multiPeer) { return multiPeer ? `path ${info.path} · ${info.peer}` : `path ${info.path}`; }

function render() {
  const v = S.view;
  $("site-name").textContent = v.site.name;
  $("site-role").textContent = v.site.role || "site";
  $("software").textContent = v.site.software || "";
  document.title = `${v.site.name} · telesurg`;
  renderHeader(v); renderPaths(v); renderDelay(v); renderArms(v); renderAlarms(v); renderEvents(); renderSystem(v);
  renderVideo(v);
}

function setPill(id, cls, text) { $(id).className = `pill ${cls}`; $(id.replace("pill-", "") + "-summary").textContent = text; }

function renderHeader(v) {
  const paths = [...S.paths.values()].map((e) => e.info);
  const up = paths.filter((p) => p.state === "up").length;
  setPill("pill-link", !paths.length ? "" : up === paths.length ? "ok" : up ? "warn" : "alarm",
          paths.length ? `${up}/${paths.length} paths up` : "no session");
  const arms = v.arms || [];
  const following = arms.filter((a) => a.state === "FOLLOWING").length;
  const held = arms.filter((a) => ["HOLD", "LATCHED", "FAULT"].includes(a.state)).length;
  setPill("pill-arms", held ? "alarm" : following ? "ok" : "", arms.length ? (held ? `${held} held` : `${following}/${arms.length} following`) : "—");
  const n = v.alarms.length + v.conditions.length;
  setPill("pill-alarms", n ? (v.alarms.some((a) => a.severity === "CRITICAL" || a.severity === "ALARM") || v.conditions.some((c) => c.severity === "alarm") ? "alarm" : "warn") : "ok",
          n ? `${n} active` : "none");
  const d = latestDelay();
  $("delay-short").textContent = v.site.role === "console" ? "Telemetry delay p99" : "Command delay p99";
  setPill("pill-delay", d === null ? "" : d[2] >= 300 ? "alarm" : d[2] >= 200 ? "warn" : "ok", d === null ? "—" : `${fmt(d[2])} ms`);
  if (v.site.started) {
    const up = Math.max(0, v.now - v.site.started);
    $("uptime").textContent = `up ${Math.floor(up / 60)}:${String(Math.floor(up % 60)).padStart(2, "0")}`;
  }
}

function latestDelay() {
  let best = null;
  for (const e of S.delay.values()) { const p = e.points[e.points.length - 1]; if (p && (!best || p[2] > best[2])) best = p; }
  return best;
}

function renderPaths(v) {
  const entries = [...S.paths.entries()];
  const peers = new Set(entries.map(([, e]) => e.info.peer));
  const multi = peers.size > 1;
  const colors = new Map(entries.map(([k], i) => [k, PATH_COLORS[i % PATH_COLORS.length]]));
  $("path-tiles").innerHTML = entries.map(([k, e]) => {
    const p = e.info;
    return `<div class="tile" style="border-top-color:${SEV_COLOR[p.state] || "#7d8fa3"}" data-path="${esc(k)}">
      <div class="name"><span><span class="sw" style="background:${colors.get(k)}"></span>${esc(pathLabel(p, multi))}</span>
        <span class="state ${esc(p.state)}">${esc(p.state)}</span></div>
      <div class="figs">
        <div class="fig"><div class="l">RTT</div><div class="n rtt-now">${fmt(p.rtt_ms)}<small>ms</small></div></div>
        <div class="fig"><div class="l">p50 / p99</div><div class="n">${fmt(p.rtt_p50_ms, 0)}<small>/ ${fmt(p.rtt_p99_ms, 0)}</small></div></div>
        <div class="fig"><div class="l">Jitter</div><div class="n">${fmt(p.jitter_ms, 2)}<small>ms</small></div></div>
        <div class="fig"><div class="l">Loss</div><div class="n">${fmt(p.loss_pct, 2)}<small>%</small></div></div>
      </div>
      <div class="sub">heard ${p.heard_s === null ? "never" : fmt(1000 * p.heard_s, 0) + " ms ago"} · probes ${p.probes_answered}/${p.probes_sent}
        · ${p.state_changes} state changes</div></div>`;
  }).join("") || `<div class="muted">no link session yet</div>`;
  const series = (idx) => entries.map(([k, e]) => ({ color: colors.get(k), label: pathLabel(e.info, multi),
    points: e.points.map((p) => [p[0], p[idx]]) }));
  $("rtt-legend").innerHTML = entries.map(([k, e]) => `<span><i style="background:${colors.get(k)}"></i>${esc(pathLabel(e.info, multi))}</span>`).join("");
  const t1 = v.now, t0 = t1 - S.windowS;
  plot($("rtt-plot"), { series: series(1), t0, t1, minMax: 50, unit: "ms",
    thresholds: [{ v: 200, c: "#f5b94a", l: "warn 200" }, { v: 300, c: "#ff8a4a", l: "alarm 300" }, { v: 500, c: "#ff5d5d", l: "critical 500" }] });
  plot($("jitter-plot"), { series: series(2), t0, t1, minMax: 2, unit: "ms" });
  plot($("loss-plot"), { series: series(3), t0, t1, minMax: 1, unit: "%",
    thresholds: [{ v: 0.5, c: "#f5b94a", l: "0.5" }, { v: 1, c: "#ff5d5d", l: "1" }] });
}

function renderDelay(v) {
  $("delay-title").textContent = v.delay.label;
  const entries = [...S.delay.entries()];
  const colors = ["#5aa9ff", "#3ecf8e", "#b58cff"];
  const series = [];
  entries.forEach(([peer, e], i) => {
    const c = colors[i % colors.length];
    series.push({ color: c, label: `${peer} p50`, points: e.points.map((p) => [p[0], p[1]]) });
    series.push({ color: c, dash: [4, 3], label: `${peer} p99`, points: e.points.map((p) => [p[0], p[2]]) });
  });
  $("delay-nums").innerHTML = entries.map(([peer, e]) => {
    const p = e.points[e.points.length - 1] || [0, null, null, null, 0];
    return `<div class="bignum"><div class="l">${esc(peer)} p50</div><div class="n delay-p50">${fmt(p[1])}<small> ms</small></div></div>
      <div class="bignum"><div class="l">p99</div><div class="n">${fmt(p[2])}<small> ms</small></div></div>
      <div class="bignum"><div class="l">max</div><div class="n">${fmt(p[3])}<small> ms</small></div></div>
      <div class="bignum"><div class="l">samples/s</div><div class="n">${p[4]}</div></div>`;
  }).join("") || `<div class="muted">no ${v.site.role === "console" ? "telemetry" : "commands"} yet</div>`;
  plot($("delay-plot"), { series, t0: v.now - S.windowS, t1: v.now, minMax: 50, unit: "ms",
    thresholds: [{ v: 100, c: "#5aa9ff", l: "100" }, { v: 200, c: "#f5b94a", l: "200" }, { v: 300, c: "#ff5d5d", l: "300" }] });
}

function renderArms(v) {
  $("arms-table").tBodies[0].innerHTML = (v.arms || []).map((a) => `<tr>
    <td><b>${esc(a.arm)}</b></td><td><span class="sv ${esc(a.state)}">${esc(a.state)}</span></td>
    <td>${esc(a.operating)}</td><td>${esc(a.owner)}${a.pending.length ? ` <span class="muted">(waiting: ${esc(a.pending.join(", "))})</span>` : ""}</td>
    <td class="num">${a.seq}</td><td class="num">${a.pos_mm.map((x) => fmt(x)).join(", ")}</td><td class="num">${fmt(a.jaw_deg)}°</td></tr>`).join("")
    || `<tr><td colspan="7" class="muted">no telemetry yet</td></tr>`;
  $("consoles-table").tBodies[0].innerHTML = (v.consoles || []).map((c) => `<tr><td><b>${esc(c.identity)}</b></td>
    <td>${esc(c.role)}</td><td>${c.slot ?? "—"}</td><td>${c.connected ? '<span class="sv FOLLOWING">connected</span>' : '<span class="sv DISABLED">gone</span>'}</td>
    <td class="num">${Object.entries(c.rtt_ms || {}).map(([p, ms]) => `${esc(p)} ${fmt(ms)}`).join(" · ") || "—"}</td></tr>`).join("")
    || `<tr><td colspan="5" class="muted">no room status yet</td></tr>`;
  $("holds").textContent = v.holds === null || v.holds === undefined ? "" : `${v.holds} hold${v.holds === 1 ? "" : "s"} since start`;
}

function renderAlarms(v) {
  const items = v.alarms.map((a) => ({ sev: a.severity.toLowerCase(), label: a.severity, text: a.message, t: a.since }))
    .concat(v.conditions.map((c) => ({ sev: c.severity, label: c.severity, text: c.text })));
  $("alarm-list").innerHTML = items.map((a) => `<li class="${esc(a.sev)}"><span class="sev">${esc(a.label)}</span>${esc(a.text)}
    ${a.t ? `<span class="muted"> since ${hms(a.t)}</span>` : ""}</li>`).join("") || `<li class="ok">All clear</li>`;
  const c = v.commands, rows = [];
  if (v.site.role !== "console") {
    rows.push(["judged", c.judged]);
    for (const [k, n] of Object.entries(c.by_outcome)) rows.push([k, n]);
    for (const [k, n] of Object.entries(c.rejected)) rows.push([`rejected: ${k}`, n]);
  } else {
    rows.push(["robot holds", v.holds ?? "—"]);
  }
  $("command-counts").innerHTML = rows.map(([k, n]) => `<span class="k">${esc(k)}</span><span class="v">${esc(n)}</span>`).join("");
}

function renderEvents() {
  $("event-count").textContent = `${S.events.length} recent`;
  $("event-list").innerHTML = S.events.slice().reverse().map((e) => `<li class="${esc(e.severity)}"><span class="t">${hms(e.t)}</span>
    <span class="kind">${esc(e.kind)}</span><span>${esc(e.text)}</span></li>`).join("");
}

function renderSystem(v) {
  const rows = [["UTC", hms(v.now)]];
  for (const [peer, ms] of Object.entries(v.clock_offset_ms || {})) rows.push([`clock offset ${peer}`, ms === null ? "—" : `${fmt(ms, 2)} ms`]);
  if (v.tap) {
    rows.push(["tap records lost", v.tap.dropped]);
    for (const [n, s] of Object.entries(v.tap.subscribers)) rows.push([`tap ${n}`, `${s.queued} queued, ${s.dropped} lost`]);
  }
  if (v.dashboard) {
    rows.push(["dashboard CPU", `${fmt(v.dashboard.cpu_s, 2)} s`]);
    if (v.dashboard.video_cpu_s !== null) rows.push(["preview CPU", `${fmt(v.dashboard.video_cpu_s, 2)} s`]);
  }
  rows.push(["pages open", v.clients ?? 0], ["broadcast observers", v.observers ?? 0]);
  $("system-kv").innerHTML = rows.map(([k, x]) => `<span class="k">${esc(k)}</span><span class="v">${esc(x)}</span>`).join("");
  const t = new Date();
  $("clock").textContent = t.toISOString().substring(11, 19) + " UTC";
}

function renderVideo(v) {
  const vid = v.video || {};
  const fps = vid.fps || {};
  const eyes = Object.entries(fps).map(([s, f]) => `${s === "0" ? "L" : s === "1" ? "R" : s} ${fmt(f, 0)}`).join(" · ");
  $("video-fps").textContent = eyes ? `stream fps ${eyes}` : "no video";
  const shown = S.frameTimes.length > 1 ? (S.frameTimes.length - 1) / (S.frameTimes[S.frameTimes.length - 1] - S.frameTimes[0] || 1) : 0;
  const age = S.lastFrame ? Date.now() / 1000 - S.lastFrame : null;
  $("frame-tag").textContent = age === null ? "no picture" : `preview ${fmt(shown, 1)} fps · ${fmt(age, 1)} s ago`;
  const frames = vid.frames || {}, freezes = vid.freezes || {};
  $("video-stats").innerHTML = [
    ["frames L / R", `${frames["0"] ?? 0} / ${frames["1"] ?? 0}`], ["freezes L / R", `${freezes["0"] ?? 0} / ${freezes["1"] ?? 0}`],
    ["preview decode", vid.decoding ? `${vid.decoded} frames` : "off (no page)"], ["JPEG encode", vid.jpeg_ms ? `${fmt(vid.jpeg_ms, 1)} ms` : "—"],
  ].map(([l, n]) => `<div class="fig"><div class="l">${l}</div><div class="n" style="font-size:14px">${esc(n)}</div></div>`).join("");
}

// -- plotting: time on x (t0..t1, UNIX s), value on y from 0; null values break the line -------------------
function niceMax(v) {
  const e = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 4, 8, 10]) if (m * e >= v) return m * e;  // quarters of these are round numbers
  return 10 * e;
}

function plot(canvas, o) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const L = 44, R = 10, T = 8, B = 20, pw = w - L - R, ph = h - T - B;
  let top = 0;
  for (const s of o.series) for (const p of s.points) if (p[0] >= o.t0 && p[1] !== null && p[1] > top) top = p[1];
  top = niceMax(Math.max(top * 1.15, o.minMax || 1));
  const X = (t) => L + ((t - o.t0) / (o.t1 - o.t0)) * pw, Y = (y) => T + ph - (Math.min(y, top) / top) * ph;
  g.font = "10px DejaVu Sans, sans-serif"; g.fillStyle = "#7d8fa3"; g.strokeStyle = "#1f2b38"; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = T + (ph * i) / 4, val = top * (1 - i / 4);
    g.beginPath(); g.moveTo(L, Math.round(y) + 0.5); g.lineTo(L + pw, Math.round(y) + 0.5); g.stroke();
    g.textAlign = "right"; g.fillText(val === 0 ? "0" : val >= 10 ? val.toFixed(0) : val.toFixed(val >= 1 ? 1 : 2), L - 6, y + 3);
  }
  const span = o.t1 - o.t0, step = span > 120 ? 60 : span > 30 ? 15 : 5;
  g.textAlign = "center";
  for (let s = 0; s <= span; s += step) {
    const x = X(o.t1 - s);
    g.beginPath(); g.moveTo(Math.round(x) + 0.5, T); g.lineTo(Math.round(x) + 0.5, T + ph); g.stroke();
    g.fillText(s === 0 ? "now" : s >= 60 ? `-${s / 60} min` : `-${s} s`, x, h - 6);
  }
  for (const th of o.thresholds || []) {
    if (th.v > top) continue;
    g.strokeStyle = th.c; g.setLineDash([5, 4]); g.globalAlpha = 0.8;
    g.beginPath(); g.moveTo(L, Y(th.v)); g.lineTo(L + pw, Y(th.v)); g.stroke();
    g.setLineDash([]); g.globalAlpha = 1; g.fillStyle = th.c; g.textAlign = "left";
    g.fillText(th.l, L + 4, Y(th.v) < T + 12 ? Y(th.v) + 11 : Y(th.v) - 3);
  }
  g.save(); g.beginPath(); g.rect(L, T, pw, ph); g.clip();
  for (const s of o.series) {
    g.strokeStyle = s.color; g.lineWidth = 1.6; g.setLineDash(s.dash || []);
    g.beginPath();
    let pen = false;
    for (const p of s.points) {
      if (p[1] === null || p[0] < o.t0 - 2) { pen = false; continue; }
      if (pen) g.lineTo(X(p[0]), Y(p[1])); else { g.moveTo(X(p[0]), Y(p[1])); pen = true; }
    }
    g.stroke();
  }
  g.restore(); g.setLineDash([]);
}

document.querySelectorAll("#window-select button").forEach((b) => b.addEventListener("click", () => {
  S.windowS = Number(b.dataset.s);
  document.querySelectorAll("#window-select button").forEach((x) => x.classList.toggle("on", x === b));
  if (S.view) render();
}));
connect();
