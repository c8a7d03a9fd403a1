// The console's review queue (AI Act Art. 14(4)(b)-(d)): the answers a tenant's review policy
// queued, one opened at a time with its content as the tenant's content policy allows, and
// approve or override (with a note). Reviewers see their own tenant's queue; admins every
// tenant's. Every opening and decision is recorded in the audit log by the server. Text from the
// server is set with textContent. The panel builds itself in <section id="panel-review">.

import { getJSON } from "./api.js";
import { el, plain } from "./dom.js";

const RELOAD_MS = 15000;
const STATUSES = ["pending", "approved", "overridden"];

function when(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  return new Date(seconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

export async function mountReview({ key, timers }) {
  const api = (path, options) => getJSON(key, path, options);
  const panel = document.getElementById("panel-review");
  const result = el("p", { id: "review-result", role: "status" });
  const say = (text, bad = false) => {
    result.textContent = text;
    result.classList.toggle("error", bad);
  };
  const status = el("select", { id: "review-status", "aria-label": "Show" },
    ...STATUSES.map((s) => new Option(s, s)));
  const table = el("table", { id: "review-table" },
    el("thead", {}, el("tr", {}, ...["Request", "Tenant", "Mode", "Status", "Model", "Queued",
      "Tokens"].map((h) => el("th", { text: h })),
    el("th", {}, el("span", { class: "visually-hidden", text: "Actions" })))),
    el("tbody"));
  const none = el("p", { id: "no-reviews", class: "muted small", text: "Nothing to review." });
  const detail = el("div", { id: "review-detail", hidden: "" });
  panel.replaceChildren(
    el("h2", { id: "review-title", text: "Review queue" }),
    el("p", { class: "small", text: "Answers queued by a tenant's review policy: held ones " +
      "reach their client only once approved; an override marks an answer as disregarded, " +
      "with your note, wherever it is shown. Opening an answer and each decision are " +
      "recorded in the audit log." }),
    el("label", {}, "Show ", status),
    el("div", { class: "table-wrap" }, table), none, detail, result);
  panel.setAttribute("aria-labelledby", "review-title");

  async function decide(info, decision, note) {
    const path = `/admin/v1/reviews/${encodeURIComponent(info.request_id)}/${decision}`;
    try {
      const done = await api(path, { method: "POST", body: { note: note || null } });
      say(`Request ${done.request_id}: ${done.status}.`);
      detail.hidden = true;
      await load();
    } catch (err) {
      say(plain(err), true);
    }
  }

  function text(label, value) {
    return el("div", { class: "review-part" }, el("h4", { text: label }),
      el("pre", { class: "review-text", text: value }));
  }

  async function open(requestId) {
    let shown;
    try {
      shown = await api(`/admin/v1/reviews/${encodeURIComponent(requestId)}`);
    } catch (err) {
      say(plain(err), true);
      return;
    }
    const c = shown.content;
    const note = el("textarea", { id: "review-note", rows: "2", maxlength: "2000",
      placeholder: "Why (required to override)" });
    const approve = el("button", { type: "button", id: "review-approve", class: "primary" }, "Approve");
    const override = el("button", { type: "button", id: "review-override" }, "Override");
    approve.addEventListener("click", () => decide(shown, "approve", note.value.trim()));
    override.addEventListener("click", () => {
      if (!note.value.trim()) {
        say("An override needs a note saying why the answer is disregarded.", true);
        note.focus();
        return;
      }
      decide(shown, "override", note.value.trim());
    });
    const parts = [];
    if (c.prompt !== null) parts.push(text("Prompt", c.prompt));
    if (c.answer !== null) parts.push(text("Answer", c.answer));
    const decidable = shown.status === "pending" || shown.status === "approved";
    detail.replaceChildren(
      el("h3", { text: `Request ${shown.request_id}` }),
      el("p", { class: "small", text: `${shown.tenant} · ${shown.model} · ${shown.mode} · ` +
        `${shown.status} · content shown as the policy “${c.shown}” allows` }),
      ...(c.note ? [el("p", { class: "muted small", id: "review-content-note", text: c.note })] : []),
      ...(shown.note ? [el("p", { class: "small", text: `Note: ${shown.note}` })] : []),
      ...parts,
      ...(decidable ? [el("label", {}, "Note ", note),
        el("div", { class: "actions" }, ...(shown.status === "pending" ? [approve] : []), override)] : []));
    detail.dataset.requestId = shown.request_id;
    detail.hidden = false;
  }

  async function load() {
    const { data } = await api(`/admin/v1/reviews?status=${encodeURIComponent(status.value)}`);
    table.tBodies[0].replaceChildren(...data.map((r) => {
      const openButton = el("button", { type: "button", "aria-label": `Open ${r.request_id}` }, "Open");
      openButton.addEventListener("click", () => open(r.request_id));
      return el("tr", { "data-request-id": r.request_id, "data-status": r.status },
        el("td", { text: r.request_id }), el("td", { text: r.tenant }), el("td", { text: r.mode }),
        el("td", { text: r.status }), el("td", { text: r.model }), el("td", { text: when(r.queued_at) }),
        el("td", { class: "num", text: `${r.prompt_tokens}+${r.completion_tokens}` }),
        el("td", {}, openButton));
    }));
    none.hidden = data.length > 0;
  }

  status.addEventListener("change", () => load().catch((err) => say(plain(err), true)));
  await load().catch((err) => say(plain(err), true));
  timers.push(setInterval(() => load().catch((err) => say(plain(err), true)), RELOAD_MS));
}
