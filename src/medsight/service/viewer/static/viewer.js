// The study viewer: one analysis's stack on a canvas. Zoom and pan, window/level by drag,
// slices by wheel and keys, distance and area in mm (in pixels, said so, without spacing),
// orientation labels, presets for the modality, mask and heatmap layers with opacity and a
// colour scale, findings that jump to and outline their segment. Research use only, not for
// diagnostic use. State is on window.viewerState for tests and for people debugging it.
"use strict";

const root = document.getElementById("viewer");
const study = root.dataset.study, analysis = Number(root.dataset.analysis);
const canvas = document.getElementById("canvas");
const context = canvas.getContext("2d");
const state = window.viewerState = {
  info: null, k: 0, zoom: 1, panX: 0, panY: 0, center: 0, width: 1, tool: "pan",
  mask: true, heat: false, maskOpacity: 0.45, heatOpacity: 0.5, selected: null,
  measurements: [], pending: null, loaded: -1, drawn: 0,
};
const cache = new Map();  // "layer:k" -> typed array
const offscreen = document.createElement("canvas");

function escapeText(text) {
  const d = document.createElement("div"); d.textContent = text ?? ""; return d.innerHTML;
}

// A perceptual ramp (dark blue - red - yellow) for the heatmap and its colour scale.
function heatColour(t) {
  const stops = [[0, [0, 0, 80]], [0.35, [120, 0, 160]], [0.65, [230, 40, 40]], [1, [255, 235, 0]]];
  for (let s = 1; s < stops.length; s++) {
    if (t <= stops[s][0]) {
      const [t0, c0] = stops[s - 1], [t1, c1] = stops[s];
      const f = (t - t0) / (t1 - t0);
      return c0.map((v, i) => Math.round(v + f * (c1[i] - v)));
    }
  }
  return stops[stops.length - 1][1];
}

async function fetchLayer(layer, k) {
  const key = `${layer}:${k}`;
  if (cache.has(key)) return cache.get(key);
  const response = await fetch(
    `/api/studies/${study}/slice?analysis=${analysis}&k=${k}&layer=${layer}`);
  if (!response.ok) throw new Error((await response.json()).detail);
  const buffer = await response.arrayBuffer();
  const data = layer === "image" ? new Float32Array(buffer) : new Uint8Array(buffer);
  if (cache.size > 400) cache.delete(cache.keys().next().value);
  cache.set(key, data);
  return data;
}

// Pixel spacing in mm along columns (i) and rows (j); 1 "pixel" when unknown.
function spacing() {
  const info = state.info;
  return info.spacing_known ? [info.spacing[0], info.spacing[1]] : [1, 1];
}

function unitOf(squared) {
  if (state.info.spacing_known) return squared ? "mm²" : "mm";
  return squared ? "pixels² (no pixel spacing: not mm²)" : "pixels (no pixel spacing: not mm)";
}

async function render() {
  const info = state.info, k = state.k;
  const [image, mask, heat] = await Promise.all([
    fetchLayer("image", k),
    info.mask && state.mask ? fetchLayer("mask", k) : null,
    info.heatmap && state.heat ? fetchLayer("heatmap", k) : null,
  ]);
  if (k !== state.k) return;  // scrolled on meanwhile
  const w = info.columns, h = info.rows, plane = w * h;
  offscreen.width = w; offscreen.height = h;
  const pixels = offscreen.getContext("2d").createImageData(w, h);
  const low = state.center - state.width / 2, scale = 255 / Math.max(state.width, 1e-6);
  const inverted = info.inverted;
  const palette = {};
  for (const s of info.segments) palette[s.index] = s.colour;
  for (let p = 0; p < plane; p++) {
    let rgb;
    if (info.channels >= 3) {
      rgb = [0, 1, 2].map(c => Math.min(255, Math.max(0, (image[c * plane + p] - low) * scale)));
    } else {
      let v = Math.min(255, Math.max(0, (image[p] - low) * scale));
      if (inverted) v = 255 - v;
      rgb = [v, v, v];
    }
    if (heat && heat[p] > 0) {
      const colour = heatColour(heat[p] / 255), a = state.heatOpacity * (heat[p] / 255);
      rgb = rgb.map((v, i) => v * (1 - a) + colour[i] * a);
    }
    if (mask && mask[p] > 0 && palette[mask[p]]) {
      const a = state.maskOpacity;
      rgb = rgb.map((v, i) => v * (1 - a) + palette[mask[p]][i] * a);
    }
    pixels.data.set([rgb[0], rgb[1], rgb[2], 255], p * 4);
  }
  offscreen.getContext("2d").putImageData(pixels, 0, 0);
  state.loaded = k;
  draw();
}

// image (column, row) <-> canvas pixel, through zoom and pan
function toCanvas(x, y) {
  const fit = Math.min(canvas.width / state.info.columns, canvas.height / state.info.rows);
  const s = fit * state.zoom;
  const ox = (canvas.width - state.info.columns * s) / 2 + state.panX;
  const oy = (canvas.height - state.info.rows * s) / 2 + state.panY;
  return [ox + x * s, oy + y * s, s];
}
function toImage(cx, cy) {
  const [ox, oy, s] = toCanvas(0, 0);
  return [(cx - ox) / s, (cy - oy) / s];
}

function length(a, b) {
  const [sx, sy] = spacing();
  return Math.hypot((b[0] - a[0]) * sx, (b[1] - a[1]) * sy);
}
function area(points) {
  const [sx, sy] = spacing();
  let twice = 0;
  for (let i = 0; i < points.length; i++) {
    const [x0, y0] = points[i], [x1, y1] = points[(i + 1) % points.length];
    twice += x0 * y1 - x1 * y0;
  }
  return Math.abs(twice) / 2 * sx * sy;
}

function draw() {
  const info = state.info;
  context.setTransform(1, 0, 0, 1, 0, 0);
  context.fillStyle = "#000"; context.fillRect(0, 0, canvas.width, canvas.height);
  const [ox, oy, s] = toCanvas(0, 0);
  context.imageSmoothingEnabled = s < 1;
  context.drawImage(offscreen, ox, oy, info.columns * s, info.rows * s);
  const selected = state.selected;
  if (selected && selected.box && (info.slices === 1 || selected.slice === state.k)) {
    const [x0, y0] = toCanvas(selected.box[0], selected.box[1]);
    const [x1, y1] = toCanvas(selected.box[2] + 1, selected.box[3] + 1);
    context.strokeStyle = "#ffeb3b"; context.lineWidth = 2; context.setLineDash([6, 4]);
    context.strokeRect(x0, y0, x1 - x0, y1 - y0); context.setLineDash([]);
  }
  context.font = "14px system-ui, sans-serif";
  if (state.boxes) {  // detected boxes (pixel edges) with their scores
    context.strokeStyle = "#ffdc00"; context.fillStyle = "#ffdc00"; context.lineWidth = 2;
    for (const b of info.boxes) {
      const [x0, y0] = toCanvas(b.pixel_box[0], b.pixel_box[1]);
      const [x1, y1] = toCanvas(b.pixel_box[2], b.pixel_box[3]);
      context.strokeRect(x0, y0, x1 - x0, y1 - y0);
      context.fillText(`${b.label} ${b.score.toFixed(2)}`, x0 + 2, Math.max(14, y0 - 4));
    }
  }
  for (const m of [...state.measurements, ...(state.pending ? [state.pending] : [])]) {
    if (m.k !== state.k) continue;
    const points = m.points.map(p => toCanvas(p[0], p[1]));
    context.strokeStyle = "#00e5ff"; context.lineWidth = 2; context.beginPath();
    points.forEach(([x, y], i) => (i ? context.lineTo(x, y) : context.moveTo(x, y)));
    if (m.kind === "area" && m.closed) context.closePath();
    context.stroke();
    if (m.label) {
      const [x, y] = points[points.length - 1];
      const wide = context.measureText(m.label).width;  // keep the label on the canvas
      const left = x + 6 + wide > canvas.width ? Math.max(2, x - 6 - wide) : x + 6;
      context.fillStyle = "#00e5ff"; context.fillText(m.label, left, Math.max(14, y - 6));
    }
  }
  if (info.orientation) {  // the patient's directions at the edges
    context.fillStyle = "#ffeb3b"; context.font = "bold 16px system-ui, sans-serif";
    const o = info.orientation, mid = [canvas.width / 2, canvas.height / 2];
    context.textAlign = "center";
    context.fillText(o.top, mid[0], 20); context.fillText(o.bottom, mid[0], canvas.height - 8);
    context.textAlign = "left"; context.fillText(o.left, 6, mid[1]);
    context.textAlign = "right"; context.fillText(o.right, canvas.width - 6, mid[1]);
    context.textAlign = "left";
  }
  context.fillStyle = "#fff"; context.font = "12px system-ui, sans-serif";
  context.fillText("research use only, not for diagnostic use", 6, canvas.height - 8);
  const slice = info.slices > 1 ? `slice ${state.k + 1} of ${info.slices}, ` : "";
  document.getElementById("status").textContent =
    `${slice}zoom ${state.zoom.toFixed(2)}x, window ${state.center.toFixed(0)} / ` +
    `${state.width.toFixed(0)}` + (info.spacing_known ? "" : " - no pixel spacing: " +
    "measurements in pixels");
  state.drawn += 1;
}

function legend() {
  const info = state.info, parts = [];
  if (info.heatmap && state.heat) {
    const stops = [0, 0.25, 0.5, 0.75, 1].map(t => `rgb(${heatColour(t).join(",")})`);
    parts.push(`<span>heatmap (Grad-CAM relevance) 0 <span class="scale" style="display:` +
      `inline-block;width:140px;height:12px;background:linear-gradient(to right,` +
      `${stops.join(",")})"></span> 1</span>`);
  }
  if (info.mask && state.mask) {
    for (const s of info.segments) {
      parts.push(`<span><span style="display:inline-block;width:12px;height:12px;` +
        `background:rgb(${s.colour.join(",")})"></span> ${escapeText(s.name)}</span>`);
    }
  }
  document.getElementById("legend").innerHTML = parts.join("");
}

function setSlice(k) {
  const clamped = Math.max(0, Math.min(state.info.slices - 1, k));
  if (clamped === state.k && state.loaded === clamped) return;
  state.k = clamped;
  render();
}

function setZoom(factor) {
  state.zoom = Math.max(0.25, Math.min(16, state.zoom * factor));
  draw();
}

function findingsTable() {
  const rows = state.info.findings.map((f, n) => {
    // a classifier's calibrated probability and flag; a segmentation is "segmented", a
    // detector's box "detected box" (its score is among the measurements)
    const result = f.flag === null || f.flag === undefined
      ? (f.detected ? "detected box" : "segmented")
      : `${f.probability.toFixed(3)} ${f.flag ? "FLAGGED" : "(not flagged: not a negative read)"}`;
    const measured = f.measurements.map(m => `${escapeText(m.name)} ${m.value} ${escapeText(m.unit)}`)
      .join("<br>");
    return `<tr data-finding="${n}"><td><a href="#" class="select">${escapeText(f.meaning)}</a>` +
      `</td><td>${result}</td><td class="measurements">${measured}</td><td>` +
      `<button class="fb" data-finding="${escapeText(f.name)}" data-verdict="agree">agree</button> ` +
      `<button class="fb" data-finding="${escapeText(f.name)}" data-verdict="disagree">disagree` +
      `</button></td></tr>`;
  });
  document.querySelector("#findings tbody").innerHTML = rows.join("");
  document.getElementById("findings").hidden = rows.length === 0;
  for (const link of document.querySelectorAll("#findings a.select")) {
    link.addEventListener("click", event => {
      event.preventDefault();
      const row = link.closest("tr");
      for (const other of document.querySelectorAll("#findings tr")) other.classList.remove("selected");
      row.classList.add("selected");
      state.selected = state.info.findings[Number(row.dataset.finding)];
      if (state.selected.slice !== undefined) setSlice(state.selected.slice);
      draw();
    });
  }
  for (const button of document.querySelectorAll("button.fb")) {
    button.addEventListener("click", async () => {
      const response = await fetch(`/api/studies/${study}/feedback`, {
        method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({finding: button.dataset.finding, verdict: button.dataset.verdict}),
      });
      document.getElementById("feedback-status").textContent =
        response.ok ? `feedback stored: ${button.dataset.verdict}` : "feedback failed";
    });
  }
}

function eventPoint(event) {
  const box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) * canvas.width / box.width,
          (event.clientY - box.top) * canvas.height / box.height];
}

function report(measurement) {
  document.getElementById("measured").textContent = `${measurement.kind}: ${measurement.label}`;
}

let drag = null;
canvas.addEventListener("mousedown", event => {
  canvas.focus();
  const at = eventPoint(event);
  drag = {start: at, last: at, pan: [state.panX, state.panY], window: [state.center, state.width]};
  if (state.tool === "distance") {
    const p = toImage(...at);
    state.pending = {kind: "distance", k: state.k, points: [p, p], label: ""};
  }
});
canvas.addEventListener("mousemove", event => {
  if (!drag) return;
  const at = eventPoint(event), dx = at[0] - drag.start[0], dy = at[1] - drag.start[1];
  if (state.tool === "pan") {
    state.panX = drag.pan[0] + dx; state.panY = drag.pan[1] + dy; draw();
  } else if (state.tool === "window") {
    const step = Math.max(drag.window[1], 1) / 200;
    state.width = Math.max(1e-3, drag.window[1] + dx * step);
    state.center = drag.window[0] - dy * step;
    render();
  } else if (state.tool === "distance" && state.pending) {
    state.pending.points[1] = toImage(...at);
    state.pending.label = `${length(...state.pending.points).toFixed(1)} ${unitOf(false)}`;
    draw();
  }
});
window.addEventListener("mouseup", event => {
  if (drag && state.tool === "distance" && state.pending) {
    state.pending.points[1] = toImage(...eventPoint(event));
    state.pending.value = length(...state.pending.points);
    state.pending.label = `${state.pending.value.toFixed(1)} ${unitOf(false)}`;
    state.measurements.push(state.pending); report(state.pending); state.pending = null;
    draw();
  }
  drag = null;
});
canvas.addEventListener("click", event => {
  if (state.tool !== "area") return;
  const p = toImage(...eventPoint(event));
  if (!state.pending) state.pending = {kind: "area", k: state.k, points: [], label: ""};
  state.pending.points.push(p);
  draw();
});
canvas.addEventListener("dblclick", () => {
  if (state.tool !== "area" || !state.pending || state.pending.points.length < 3) return;
  const m = state.pending;
  m.points = m.points.slice(0, -1).length >= 3 ? m.points.slice(0, -1) : m.points;  // the dblclick's
  m.closed = true; m.value = area(m.points);
  m.label = `${m.value.toFixed(1)} ${unitOf(true)}`;
  state.measurements.push(m); report(m); state.pending = null;
  draw();
});
canvas.addEventListener("wheel", event => {
  event.preventDefault();
  if (event.ctrlKey || state.info.slices === 1) setZoom(event.deltaY < 0 ? 1.15 : 1 / 1.15);
  else setSlice(state.k + (event.deltaY > 0 ? 1 : -1));
}, {passive: false});
canvas.addEventListener("keydown", event => {
  const moves = {ArrowUp: -1, ArrowLeft: -1, PageUp: -10, ArrowDown: 1, ArrowRight: 1, PageDown: 10};
  if (event.key in moves) { event.preventDefault(); setSlice(state.k + moves[event.key]); }
  else if (event.key === "Home") setSlice(0);
  else if (event.key === "End") setSlice(state.info.slices - 1);
  else if (event.key === "+" || event.key === "=") setZoom(1.25);
  else if (event.key === "-") setZoom(0.8);
  else if (event.key === "r") reset();
});

function applyPreset(index) {
  const preset = state.info.presets[index];
  state.center = preset.center; state.width = preset.width;
  render();
}

function reset() {
  state.zoom = 1; state.panX = 0; state.panY = 0; state.measurements = []; state.pending = null;
  document.getElementById("measured").textContent = "";
  draw();
}

async function start() {
  const response = await fetch(`/api/studies/${study}/volume?analysis=${analysis}`);
  if (!response.ok) {
    document.getElementById("status").textContent = (await response.json()).detail;
    return;
  }
  const info = state.info = await response.json();
  state.heat = info.heatmap && info.flagged;  // a heatmap explains a flag; else on request
  state.boxes = info.boxes.length > 0;
  if (state.boxes) {
    document.getElementById("boxes-control").hidden = false;
    const toggle = document.getElementById("boxes");
    toggle.addEventListener("change", () => { state.boxes = toggle.checked; draw(); });
  }
  const select = document.getElementById("preset");
  select.innerHTML = info.presets.map((p, i) => `<option value="${i}">${escapeText(p.name)}</option>`)
    .join("");
  select.addEventListener("change", () => applyPreset(Number(select.value)));
  for (const button of document.querySelectorAll("button[data-tool]")) {
    button.addEventListener("click", () => {
      state.tool = button.dataset.tool; state.pending = null;
      for (const b of document.querySelectorAll("button[data-tool]")) b.classList.remove("active");
      button.classList.add("active");
      canvas.style.cursor = state.tool === "pan" ? "grab" : "crosshair";
    });
  }
  document.getElementById("zoom-in").addEventListener("click", () => setZoom(1.25));
  document.getElementById("zoom-out").addEventListener("click", () => setZoom(0.8));
  document.getElementById("reset").addEventListener("click", reset);
  const layerControls = [
    ["mask", "mask-control", "mask-opacity", "mask", "maskOpacity"],
    ["heatmap", "heat-control", "heat-opacity", "heat", "heatOpacity"],
  ];
  for (const [kind, control, opacity, flag, level] of layerControls) {
    if (!info[kind]) continue;
    document.getElementById(control).hidden = false;
    const box = document.getElementById(kind);
    box.checked = state[flag];
    box.addEventListener("change", () => { state[flag] = box.checked; legend(); render(); });
    document.getElementById(opacity).addEventListener("input", event => {
      state[level] = Number(event.target.value) / 100; render();
    });
  }
  findingsTable();
  legend();
  state.k = Math.floor(info.slices / 2);
  applyPreset(0);
}

start();
