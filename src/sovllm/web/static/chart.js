// A stacked bar chart as inline SVG, built with DOM calls (no HTML parsing, no library).

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = 8;

function svg(tag, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

export function compact(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(n >= 1e10 ? 0 : 1)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e7 ? 0 : 1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(n >= 1e4 ? 0 : 1)}k`;
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

// The top of the axis: four equal steps of 1, 2, 2.5 or 5 times a power of ten.
function niceMax(value) {
  if (value <= 0) return 4;
  const raw = value / 4;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw);
  return 4 * step;
}

/**
 * Draw `values` (a Map day -> Map series -> number) as stacked bars into `container`, and
 * the series' colours into `legend`. Returns the series in colour order.
 */
export function stackedBars(container, legend, days, series, value, label) {
  const width = 960;
  const height = 260;
  const m = { top: 12, right: 8, bottom: 42, left: 48 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const totals = days.map((d) => series.reduce((s, name) => s + value(d, name), 0));
  const max = niceMax(Math.max(0, ...totals));
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": label,
  });
  const title = svg("title", {}, root);
  title.textContent = label;
  for (let i = 0; i <= 4; i++) {
    const y = m.top + plotH - (plotH * i) / 4;
    svg("line", { x1: m.left, x2: width - m.right, y1: y, y2: y, class: "axis" }, root);
    const t = svg("text", { x: m.left - 6, y: y + 4, "text-anchor": "end" }, root);
    t.textContent = compact((max * i) / 4);
  }
  const slot = days.length ? plotW / days.length : plotW;
  const barW = Math.max(2, Math.min(40, slot * 0.7));
  const labelEvery = Math.max(1, Math.ceil(days.length / 10));
  days.forEach((day, i) => {
    const x = m.left + i * slot + (slot - barW) / 2;
    let y = m.top + plotH;
    series.forEach((name, k) => {
      const v = value(day, name);
      if (!v) return;
      const h = (plotH * v) / max;
      y -= h;
      const rect = svg("rect", {
        x, y, width: barW, height: Math.max(h, 0.5), class: `bar c${k % COLOURS}`,
        "data-day": day, "data-series": name, "data-value": v,
      }, root);
      const tip = svg("title", {}, rect);
      tip.textContent = `${day} · ${name}: ${v.toLocaleString()} tokens`;
    });
    if (i % labelEvery === 0) {
      const t = svg("text", { x: x + barW / 2, y: height - m.bottom + 16, "text-anchor": "middle" }, root);
      t.textContent = day.slice(5); // MM-DD
    }
  });
  if (!days.length) {
    const t = svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, root);
    t.textContent = "No usage in this period";
  }
  container.replaceChildren(root);
  legend.replaceChildren(...series.map((name, k) => {
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch c${k % COLOURS}`;
    swatch.setAttribute("aria-hidden", "true");
    li.append(swatch, name);
    return li;
  }));
}
