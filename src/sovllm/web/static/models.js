// The console's Models panel: the model allow-list (each row verified against its signature
// and the audit log) and the latest evaluation of each weights hash per suite. It builds itself
// in <section id="panel-models">; text from the server is set with textContent.

import { getJSON } from "./api.js";
import { el, plain } from "./dom.js";

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ") : "";
}

/** "accuracy 0.58 < 0.75, refusal 0.12 < 0.90, stability 1.00". */
export function scoreText(ev) {
  return Object.entries(ev.scores).map(([name, score]) => {
    const floor = ev.thresholds[name];
    const below = floor !== undefined && score < floor;
    return `${name} ${score.toFixed(2)}${below ? ` < ${floor.toFixed(2)}` : ""}`;
  }).join(", ");
}

export async function mountModels({ key }) {
  const panel = document.getElementById("panel-models");
  if (panel.dataset.mounted) return panel.reload();
  panel.dataset.mounted = "1";
  panel.setAttribute("aria-labelledby", "models-title");
  const body = el("tbody");
  const head = el("tr", {}, ...["Model", "SHA-256", "Status", "Source", "Licence", "Approved",
    "Latest evaluation"].map((h) => el("th", { text: h })));
  const status = el("p", { id: "models-result", role: "status" });
  panel.replaceChildren(
    el("h2", { id: "models-title", text: "Models" }),
    el("p", { class: "small muted", text: "The weights approved with `sovllm models approve` "
      + "and the latest `sovllm eval` of each, per suite. A row that fails its signature check "
      + "was edited in the database." }),
    el("div", { class: "table-wrap" }, el("table", { id: "models-table" },
      el("thead", {}, head), body)),
    status);

  async function load() {
    const { data } = await getJSON(key, "/admin/v1/models");
    body.replaceChildren(...data.map((m) => {
      const evals = m.evals.map((ev) => el("div", { class: ev.passed ? "" : "error",
        text: `${ev.suite} v${ev.suite_version} (${ev.time.slice(0, 16).replace("T", " ")}): `
          + `${ev.passed ? "passed" : "below threshold"}: ${scoreText(ev)}` }));
      const by = m.approved_by ? (m.approved_by.cli ?? m.approved_by.key_id ?? "") : "";
      return el("tr", { "data-sha256": m.sha256 },
        el("td", { text: m.name }),
        el("td", {}, el("code", { text: m.sha256.slice(0, 16), title: m.sha256 })),
        el("td", { class: m.problem ? "error" : "", text: m.problem ? `${m.status}: ${m.problem}`
          : m.status }),
        el("td", { text: m.source ?? "" }), el("td", { text: m.licence ?? "" }),
        el("td", { text: m.approved_at ? `${when(m.approved_at)} ${by}` : "" }),
        el("td", {}, ...(evals.length ? evals : [el("span", { class: "muted", text: "none" })])));
    }));
    status.textContent = data.length ? `${data.length} model(s)` : "No model approved or evaluated yet.";
    status.classList.remove("error");
  }

  panel.reload = () => load().catch((err) => {
    status.textContent = plain(err);
    status.classList.add("error");
  });
  return panel.reload();
}
