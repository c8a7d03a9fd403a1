// The console's incident view (AI Act Art. 73; ISO/IEC 27001 A.5.24-A.5.28): the incidents with
// their reporting deadline counting down, the report for the authority, and, for admins, the
// forms to open, link and move one on. Auditors read only. Text from the server is set with
// textContent. The panel builds itself in <section id="panel-incidents">.

import { downloadText, getJSON, request } from "./api.js";
import { el, plain } from "./dom.js";

const RELOAD_MS = 15000;
const CLASSES = [
  ["serious", "serious incident: 15 days (Art. 73(2))"],
  ["death", "a person died: 10 days (Art. 73(4))"],
  ["widespread", "widespread infringement: 2 days (Art. 73(3))"],
  ["critical-infrastructure", "critical infrastructure: 2 days (Art. 73(3))"],
  ["data-breach", "personal data breach: 72 hours (GDPR Art. 33)"],
  ["security", "security incident, no report due (ISO/IEC 27001)"],
];
const NEXT = ["investigating", "reported", "closed"];

function field(label, control) {
  return el("label", {}, label, " ", control);
}

function select(name, options) {
  return el("select", { name }, ...options.map(([value, text]) => new Option(text, value)));
}

/** "3.2 days", "5 h 12 min", "OVERDUE by 2 h 3 min". */
export function countdown(seconds) {
  const left = Math.abs(seconds);
  const days = left / 86400;
  const words = days >= 2 ? `${days.toFixed(1)} days`
    : `${Math.floor(left / 3600)} h ${Math.floor((left % 3600) / 60)} min`;
  return seconds >= 0 ? words : `OVERDUE by ${words}`;
}

function when(iso) {
  return iso ? iso.replace("T", " ").replace(/(\.\d+)?\+00:00$/, " UTC") : "—";
}

export async function mountIncidents({ key, role, timers }) {
  const api = (path, options) => getJSON(key, path, options);
  const panel = document.getElementById("panel-incidents");
  const result = el("p", { id: "incident-result", role: "status" });
  const say = (text, bad = false) => {
    result.textContent = text;
    result.classList.toggle("error", bad);
  };
  const table = el("table", { id: "incidents-table" },
    el("thead", {}, el("tr", {}, ...["Incident", "Class", "Status", "Summary", "Aware since",
      "Report due", "Time left"].map((h) => el("th", { text: h })),
    el("th", {}, el("span", { class: "visually-hidden", text: "Actions" })))),
    el("tbody"));
  const none = el("p", { id: "no-incidents", class: "muted small", text: "No incidents." });
  panel.replaceChildren(
    el("h2", { id: "incidents-title", text: "Incidents" }),
    el("p", { class: "small", text: "Serious incidents must be reported to the market " +
      "surveillance authority within the deadline of their class, counted from when you " +
      "became aware (AI Act Art. 73). Each change is recorded in the audit log." }),
    el("div", { class: "table-wrap" }, table), none);
  panel.setAttribute("aria-labelledby", "incidents-title");
  const deadlines = new Map();
  let listed = [];

  function tick() {
    const now = Date.now();
    for (const row of table.tBodies[0].rows) {
      const due = deadlines.get(row.dataset.incident);
      const cell = row.querySelector(".left");
      if (due === undefined || !cell) continue;
      const seconds = (due - now) / 1000;
      cell.textContent = countdown(seconds);
      cell.classList.toggle("error", seconds < 86400);
    }
  }

  async function report(incident) {
    try {
      const response = await request(key, `/admin/v1/incidents/${encodeURIComponent(incident.id)}/report`,
        { accept: "text/markdown" });
      downloadText(`${incident.id}.md`, await response.text(), "text/markdown");
      say(`Report of ${incident.id} downloaded (its reading is recorded in the audit log).`);
    } catch (err) {
      say(plain(err), true);
    }
  }

  async function load() {
    const { data } = await api("/admin/v1/incidents");
    listed = data;
    deadlines.clear();
    table.tBodies[0].replaceChildren(...data.map((i) => {
      if (i.seconds_left !== null) deadlines.set(i.id, Date.now() + i.seconds_left * 1000);
      const exportButton = el("button", { type: "button", "aria-label": `Report of ${i.id}` }, "Report");
      exportButton.addEventListener("click", () => report(i));
      const left = i.seconds_left === null
        ? (i.report_deadline ? `${i.status}` : "no report due") : "";
      return el("tr", { "data-incident": i.id, "data-status": i.status },
        el("td", { text: i.id }), el("td", { text: i.severity }), el("td", { text: i.status }),
        el("td", { text: i.summary }), el("td", { text: when(i.aware_at) }),
        el("td", { text: when(i.report_deadline) }), el("td", { class: "left", text: left }),
        el("td", {}, exportButton));
    }));
    none.hidden = data.length > 0;
    tick();
    if (role === "admin") fillChoices();
  }

  const choices = [];
  function fillChoices() {
    const open = listed.filter((i) => i.status !== "closed");
    for (const list of choices) {
      const kept = list.value;
      list.replaceChildren(...open.map((i) => new Option(`${i.id} (${i.status})`, i.id)));
      if (open.some((i) => i.id === kept)) list.value = kept;
    }
  }

  async function submit(event, path, body, done) {
    event.preventDefault();
    try {
      await api(path, { method: "POST", body });
      say(done);
      event.target.reset();
      await load();
    } catch (err) {
      say(plain(err), true);
    }
  }

  if (role === "admin") {
    const openForm = el("form", { id: "incident-open-form", class: "form-grid" },
      field("Class", select("severity", CLASSES)),
      field("Summary", el("input", { name: "summary", required: "", maxlength: "2000" })),
      field("Aware since (UTC)", el("input", { name: "aware_at", type: "datetime-local", step: "1" })),
      el("div", { class: "actions" }, el("button", { type: "submit", class: "danger", text: "Open incident" })));
    openForm.addEventListener("submit", (event) => {
      const f = new FormData(event.target);
      const aware = String(f.get("aware_at") ?? "");
      submit(event, "/admin/v1/incidents", {
        severity: f.get("severity"), summary: String(f.get("summary")).trim(),
        aware_at: aware ? `${aware}Z` : null,
      }, "Incident opened.");
    });
    const linkTarget = select("incident", []);
    const linkForm = el("form", { id: "incident-link-form", class: "form-grid" },
      field("Incident", linkTarget),
      field("Request id", el("input", { name: "request_id", placeholder: "chatcmpl-…" })),
      field("or audit entries", el("input", { name: "range", placeholder: "120-180", pattern: "\\d+-\\d+" })),
      el("div", { class: "actions" }, el("button", { type: "submit", text: "Link" })));
    linkForm.addEventListener("submit", (event) => {
      const f = new FormData(event.target);
      const id = String(f.get("incident") ?? "");
      const rid = String(f.get("request_id") ?? "").trim();
      const range = /^(\d+)-(\d+)$/.exec(String(f.get("range") ?? "").trim());
      const body = rid ? { request_id: rid }
        : range ? { from_seq: Number(range[1]), to_seq: Number(range[2]) } : {};
      submit(event, `/admin/v1/incidents/${encodeURIComponent(id)}/links`, body, `Linked to ${id}.`);
    });
    const statusTarget = select("incident", []);
    const statusForm = el("form", { id: "incident-status-form", class: "form-grid" },
      field("Incident", statusTarget),
      field("Status", select("status", NEXT.map((s) => [s, s]))),
      field("What was done", el("input", { name: "note", maxlength: "4000" })),
      el("div", { class: "actions" }, el("button", { type: "submit", class: "primary", text: "Set status" })));
    statusForm.addEventListener("submit", (event) => {
      const f = new FormData(event.target);
      const id = String(f.get("incident") ?? "");
      submit(event, `/admin/v1/incidents/${encodeURIComponent(id)}/status`,
        { status: f.get("status"), note: String(f.get("note") ?? "").trim() }, `${id}: ${f.get("status")}.`);
    });
    choices.push(linkTarget, statusTarget);
    panel.append(el("div", { id: "incident-controls" },
      el("h3", { text: "Open an incident" }), openForm,
      el("h3", { text: "Link a request or audit entries" }), linkForm,
      el("h3", { text: "Move an incident on" }), statusForm));
  }
  panel.append(result);
  await load();
  timers.push(setInterval(tick, 1000));
  timers.push(setInterval(() => load().catch((err) => say(plain(err), true)), RELOAD_MS));
}
