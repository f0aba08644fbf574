// A small SVG line chart: a few series of (x, y) points, optional log x axis, vertical markers with labels.
// Redrawn whole on every update (a few hundred points at most), so growing curves need no bookkeeping.
import { el } from "./api.js";

const NS = "http://www.w3.org/2000/svg";
const W = 560, H = 260, L = 56, R = 26, T = 12, B = 38;

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

const fmt = (v, log) => (log || Math.abs(v) < 0.01 || Math.abs(v) >= 1e4 ? v.toExponential(0) : +v.toFixed(3));

// host: an element to draw into; title: the chart's accessible name; series: [{name, points: [[x, y], ...]}];
// markers: [{x, label, alt}] drawn as dashed vertical lines.
export function lineChart(host, { title, series, xLabel, yLabel, logX = false, markers = [] }) {
  host.replaceChildren();
  const drawn = series.filter((s) => s.points.length);
  const all = drawn.flatMap((s) => s.points).concat(markers.map((m) => [m.x, null]));
  const xs = all.map((p) => p[0]).filter((x) => Number.isFinite(x) && (!logX || x > 0));
  const ys = drawn.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  root.append(svg("title", {}, title));
  if (!xs.length || !ys.length) {
    host.append(el("p", { class: "none" }, `${title}: no data yet.`));
    return;
  }
  const tx = (x) => (logX ? Math.log10(x) : x);
  let [x0, x1] = [Math.min(...xs.map(tx)), Math.max(...xs.map(tx))];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.06;
  y0 -= pad; y1 += pad;
  const px = (x) => L + ((tx(x) - x0) / (x1 - x0)) * (W - L - R);
  const py = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  root.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  root.append(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  for (let i = 0; i <= 4; i++) {
    const yv = y0 + ((y1 - y0) * i) / 4;
    root.append(svg("text", { x: L - 6, y: py(yv) + 4, "text-anchor": "end" }, String(fmt(yv, false))));
    const xv = x0 + ((x1 - x0) * i) / 4;
    const shown = logX ? 10 ** xv : xv;
    root.append(svg("text", { x: L + ((xv - x0) / (x1 - x0)) * (W - L - R), y: H - B + 16, "text-anchor": "middle" }, String(fmt(shown, logX))));
  }
  root.append(svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, xLabel));
  root.append(svg("text", { x: 12, y: (T + H - B) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(T + H - B) / 2})` }, yLabel));
  drawn.forEach((s, i) => {
    const points = s.points.filter((p) => Number.isFinite(p[1]) && (!logX || p[0] > 0));
    root.append(svg("polyline", { class: `s${i % 5}`, fill: "none", "stroke-width": 2, points: points.map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(" ") }));
    if (points.length <= 60) for (const p of points) root.append(svg("circle", { class: `dot${i % 5}`, cx: px(p[0]), cy: py(p[1]), r: 3 }));
  });
  markers.forEach((m, i) => {
    if (!Number.isFinite(m.x) || (logX && m.x <= 0)) return;
    const x = px(m.x);
    root.append(svg("line", { class: `marker${m.alt ? " alt" : ""}`, x1: x, y1: T, x2: x, y2: H - B, "stroke-width": 1.5 }));
    root.append(svg("text", { x: x + 3, y: T + 10 + 12 * i }, m.label));
  });
  host.append(root);
  if (drawn.length > 1 || markers.length) {
    host.append(el("ul", { class: "legend" },
      drawn.map((s, i) => el("li", { class: `s${i % 5}` }, el("span", { class: "sw", style: `color: var(--c${i})` }), s.name)),
      markers.map((m) => el("li", {}, `┆ ${m.label}: ${fmt(m.x, true)}`))));
    host.querySelectorAll(".legend li[class^=s] .sw").forEach((sw, i) => { sw.style.color = getComputedStyle(root.querySelector(`.s${i % 5}`)).stroke; });
  }
}
