// The console's energy view: joules per tenant and day as stacked bars (in Wh), with kWh, CO2e
// and where the joules were read. An `estimated` source is an estimate from the hardware
// catalog, never a measurement, and the table says so. The panel builds itself in
// <section id="panel-energy">; text from the server is set with textContent.

import { getJSON } from "./api.js";
import { el, plain } from "./dom.js";
import { compact, stackedBars } from "./chart.js";

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

/** "measured (RAPL)", "estimated", "mixed", "none recorded". */
export function sourceText(source, day) {
  if (source.startsWith("measured:")) return `measured (${source.slice(9).toUpperCase()})`;
  if (source) return source;
  return day.length === 7 ? "rolled up" : "none recorded";
}

export async function mountEnergy({ key }) {
  const panel = document.getElementById("panel-energy");
  if (panel.dataset.mounted) return panel.reload();
  panel.dataset.mounted = "1";
  panel.setAttribute("aria-labelledby", "energy-title");
  const since = el("input", { name: "since", type: "date", id: "energy-since" });
  since.value = isoDay(new Date(Date.now() - 29 * 86400000));
  const form = el("form", { id: "energy-form", class: "form-grid" },
    el("label", {}, "Since ", since),
    el("div", { class: "actions" }, el("button", { type: "submit", text: "Show" })));
  const chart = el("div", { id: "energy-chart", class: "chart" });
  const legend = el("ul", { id: "energy-legend", class: "legend" });
  const status = el("p", { id: "energy-result", role: "status" });
  const body = el("tbody");
  const head = el("tr", {}, ...["Day", "Tenant", "Requests", "kWh", "CO2e g", "Source"].map(
    (h, i) => el("th", { text: h, ...(i >= 2 && i <= 4 ? { class: "num" } : {}) })));
  const table = el("table", { id: "energy-table" }, el("thead", {}, head), body);
  panel.replaceChildren(
    el("h2", { id: "energy-title", text: "Energy per tenant and day" }),
    el("p", { class: "small muted", text: "Joules of each request, shared among the requests "
      + "of each engine step by their tokens. 'estimated' is computed from the hardware's TDP, "
      + "not measured." }),
    form, chart, legend,
    el("details", {}, el("summary", { text: "As a table" }),
      el("div", { class: "table-wrap" }, table)),
    status);

  async function load() {
    const params = new URLSearchParams({ since: since.value });
    const { data } = await getJSON(key, `/admin/v1/usage/energy?${params}`);
    const perDay = new Map(); // day -> tenant -> joules
    for (const row of data) {
      const day = perDay.get(row.day) ?? new Map();
      day.set(row.tenant, (day.get(row.tenant) ?? 0) + row.joules);
      perDay.set(row.day, day);
    }
    const days = [];
    const last = [isoDay(new Date()), ...perDay.keys()].sort().at(-1);
    for (let d = new Date(`${since.value}T00:00:00Z`); isoDay(d) <= last && days.length < 400;
      d = new Date(d.getTime() + 86400000)) days.push(isoDay(d));
    const tenants = [...new Set(data.map((r) => r.tenant))].sort();
    const wh = (day, tenant) => (perDay.get(day)?.get(tenant) ?? 0) / 3600;
    const totalWh = data.reduce((s, r) => s + r.joules, 0) / 3600;
    stackedBars(chart, legend, days, tenants, wh,
      `Energy per day and tenant since ${since.value}, in Wh: ${compact(totalWh)} Wh in all`);
    body.replaceChildren(...[...data].reverse().map((r) => el("tr", {},
      el("td", { text: r.day }), el("td", { text: r.tenant }),
      el("td", { class: "num", text: r.requests.toLocaleString() }),
      el("td", { class: "num", text: r.kwh.toFixed(6) }),
      el("td", { class: "num", text: r.co2e_g.toFixed(3) }),
      el("td", { text: sourceText(r.source, r.day) }))));
    status.textContent = `${data.length} tenant-days`;
    status.classList.remove("error");
  }

  panel.reload = () => load().catch((err) => {
    status.textContent = plain(err);
    status.classList.add("error");
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    panel.reload();
  });
  return panel.reload();
}
