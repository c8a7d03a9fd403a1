// The admin console: tenants and keys, usage, latency, the audit log, failed sign-ins, erasure,
// and the replica pool where the server has one. Everything goes through the /admin/v1 API with the key in a
// header. All text from the server is set with textContent.

import { ApiError, downloadText, getJSON, keyStore, request } from "./api.js";
import { plain } from "./dom.js";
import { compact, stackedBars } from "./chart.js";
import { watchClock } from "./clock.js";
import { mountEnergy } from "./energy.js";
import { mountIncidents } from "./incidents.js";
import { mountModels } from "./models.js";
import { mountReview } from "./review.js";
import { formatSeconds, parseGauge, parseHistogram, quantile, subtract } from "./metrics.js";

const keys = keyStore("sovllm.admin.key");
const $ = (id) => document.getElementById(id);
const POLL_MS = 5000;
const WINDOW_MS = 5 * 60 * 1000;
const PANELS = {
  admin: ["tenants", "keys", "usage", "energy", "latency", "secrets", "verify", "audit", "denied", "privacy", "incidents", "models", "review"],
  auditor: ["usage", "energy", "latency", "secrets", "verify", "audit", "denied", "privacy", "incidents", "models"],
  reviewer: ["review"],
};
const TITLES = {
  tenants: "Tenants", keys: "Keys", usage: "Usage", pool: "Pool", latency: "Latency",
  secrets: "Key ages",
  verify: "Integrity", audit: "Audit log", denied: "Sign-ins", privacy: "Erasure",
  incidents: "Incidents", energy: "Energy", review: "Review", models: "Models",
};

const state = { key: null, me: null, tenants: [], timers: [], snapshots: [], models: new Set() };

const api = (path, options) => getJSON(state.key, path, options);

// -- small DOM helpers -----------------------------------------------------------------------

function td(text, cls) {
  const cell = document.createElement("td");
  cell.textContent = text ?? "";
  if (cls) cell.className = cls;
  return cell;
}

function button(text, onClick, cls, label) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  if (cls) b.className = cls;
  if (label) b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

function limit(value) {
  return value === null || value === undefined ? "—" : value.toLocaleString();
}

function say(id, text, bad = false) {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle("error", bad);
}

function numberOrNull(value) {
  return value === "" || value === null || value === undefined ? null : Number(value);
}

function limitsFrom(form) {
  const f = new FormData(form);
  return {
    rpm: numberOrNull(f.get("rpm")),
    tpm: numberOrNull(f.get("tpm")),
    max_concurrent: numberOrNull(f.get("max_concurrent")),
    monthly_tokens: numberOrNull(f.get("monthly_tokens")),
  };
}

function fillLimits(form, limits) {
  for (const name of ["rpm", "tpm", "max_concurrent", "monthly_tokens"]) {
    form.elements[name].value = limits[name] ?? "";
  }
}

function utc(seconds) {
  return new Date(seconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

// -- sign in ---------------------------------------------------------------------------------

async function signIn(key) {
  const me = await getJSON(key, "/v1/me");
  if (!PANELS[me.role]) {
    throw new ApiError(403, "forbidden", me.role,
      `This key has the ${me.role} role. The console is for admins and auditors; use the chat page.`);
  }
  state.key = key;
  state.me = me;
  keys.set(key);
  $("signin").hidden = true;
  $("console").hidden = false;
  $("account").hidden = false;
  $("who").textContent = `${me.tenant} · ${me.role}`;
  const visible = [...PANELS[me.role]];
  for (const name of visible) $(`panel-${name}`).hidden = false;
  renderNav(visible);
  await Promise.allSettled(visible.map((name) => LOADERS[name]?.()));
  if (me.role === "reviewer") return; // the pool and the clock are not a reviewer's to read
  probePool(); // appears only if the server has a replica pool
  watchClock({ key, timers: state.timers });
}

function renderNav(names) {
  const nav = $("nav-panels");
  nav.replaceChildren(...names.map((name) => {
    const a = document.createElement("a");
    a.href = `#panel-${name}`;
    a.textContent = TITLES[name];
    return a;
  }));
  nav.hidden = false;
}

function signOut() {
  keys.clear();
  for (const timer of state.timers) clearInterval(timer);
  location.reload();
}

// -- tenants ---------------------------------------------------------------------------------

async function loadTenants() {
  const { data } = await api("/admin/v1/tenants");
  state.tenants = data;
  const body = $("tenants-table").tBodies[0];
  body.replaceChildren(...data.map((t) => {
    const tr = document.createElement("tr");
    tr.dataset.tenant = t.name;
    tr.append(
      td(t.name), td(String(t.weight), "num"), td(limit(t.limits.rpm), "num"),
      td(limit(t.limits.tpm), "num"), td(limit(t.limits.max_concurrent), "num"),
      td(limit(t.limits.monthly_tokens), "num"), td(String(t.active_keys), "num"),
    );
    const actions = td("");
    actions.append(button("Edit", () => editTenant(t), "", `Edit tenant ${t.name}`));
    tr.append(actions);
    return tr;
  }));
  const select = $("key-tenant");
  const chosen = select.value;
  select.replaceChildren(...data.map((t) => new Option(t.name, t.name)));
  if (chosen && data.some((t) => t.name === chosen)) select.value = chosen;
  updateTargets();
}

function editTenant(tenant) {
  const form = $("tenant-form");
  form.dataset.editing = tenant.name;
  form.elements.name.value = tenant.name;
  form.elements.name.readOnly = true;
  fillLimits(form, tenant.limits);
  form.elements.weight.value = tenant.weight;
  form.elements.content_policy.value = "";
  form.elements.mask_prompts.value = "";
  form.elements.review_policy.value = "";
  form.elements.review_policy.placeholder = `unchanged: ${tenant.review_policy}`;
  $("tenant-form-title").textContent = `Edit tenant ${tenant.name}`;
  $("tenant-submit").textContent = "Save tenant";
  $("tenant-cancel").hidden = false;
  form.elements.rpm.focus();
}

function resetTenantForm() {
  const form = $("tenant-form");
  form.reset();
  form.elements.review_policy.placeholder = "none, hold or sample:P";
  delete form.dataset.editing;
  form.elements.name.readOnly = false;
  $("tenant-form-title").textContent = "Create a tenant";
  $("tenant-submit").textContent = "Create tenant";
  $("tenant-cancel").hidden = true;
}

async function submitTenant(event) {
  event.preventDefault();
  const form = event.target;
  const f = new FormData(form);
  const name = String(f.get("name")).trim();
  const editing = form.dataset.editing;
  const extra = {};
  if (f.get("content_policy")) extra.content_policy = f.get("content_policy");
  if (f.get("mask_prompts")) extra.mask_prompts = f.get("mask_prompts") === "true";
  const review = String(f.get("review_policy") ?? "").trim(); // docs/oversight.md
  if (review) extra.review_policy = review;
  const body = { ...limitsFrom(form), weight: Number(f.get("weight") || 1) };
  try {
    if (editing) {
      await api(`/admin/v1/tenants/${encodeURIComponent(editing)}`, { method: "PATCH", body: { ...body, ...extra } });
      say("tenant-result", `Tenant ${editing} saved.`);
    } else {
      await api("/admin/v1/tenants", { method: "POST", body: { name, ...body } });
      if (Object.keys(extra).length) {
        // Creation takes limits and weight; the content rules are set by an update.
        await api(`/admin/v1/tenants/${encodeURIComponent(name)}`, { method: "PATCH", body: { ...body, ...extra } });
      }
      say("tenant-result", `Tenant ${name} created.`);
    }
    resetTenantForm();
    await loadTenants();
  } catch (err) {
    say("tenant-result", plain(err), true);
  }
}

// -- keys ------------------------------------------------------------------------------------

function keyStatus(k) {
  if (k.revoked_at) return "revoked";
  if (k.expires_at && k.expires_at * 1000 < Date.now()) return "expired";
  return "active";
}

async function loadKeys() {
  const { data } = await api("/admin/v1/keys");
  const body = $("keys-table").tBodies[0];
  body.replaceChildren(...data.map((k) => {
    const tr = document.createElement("tr");
    tr.dataset.keyId = k.id;
    const status = keyStatus(k);
    const prefix = td(`${k.prefix}…`);
    prefix.title = k.id;
    tr.append(
      prefix, td(k.name ?? ""), td(k.tenant), td(k.role), td(limit(k.limits.rpm), "num"),
      td(limit(k.limits.tpm), "num"), td(limit(k.limits.max_concurrent), "num"),
      td(limit(k.limits.monthly_tokens), "num"),
      td(k.expires_at ? new Date(k.expires_at * 1000).toLocaleDateString() : "never"),
      td(status, `key-status ${status}`),
    );
    const actions = td("");
    if (status === "active") {
      actions.append(button("Quotas", () => editKey(k), "", `Set the quotas of key ${k.prefix}`));
      const revoke = button("Revoke", () => revokeKey(k, revoke), "danger", `Revoke key ${k.prefix}`);
      actions.append(" ", revoke);
    }
    tr.append(actions);
    return tr;
  }));
}

async function revokeKey(k, control) {
  if (control.dataset.confirm !== "yes") {
    control.dataset.confirm = "yes";
    control.textContent = "Confirm revoke";
    return;
  }
  try {
    await api(`/admin/v1/keys/${encodeURIComponent(k.id)}/revoke`, { method: "POST" });
    say("key-result", `Key ${k.prefix}… revoked.`);
    await Promise.all([loadKeys(), loadTenants()]);
  } catch (err) {
    say("key-result", plain(err), true);
  }
}

function editKey(k) {
  const form = $("key-form");
  form.dataset.editing = k.id;
  fillLimits(form, k.limits);
  for (const name of ["tenant", "role", "name", "expires_at"]) form.elements[name].disabled = true;
  $("key-form-title").textContent = `Quotas of key ${k.prefix}…`;
  $("key-submit").textContent = "Save quotas";
  $("key-cancel").hidden = false;
  form.elements.rpm.focus();
}

function resetKeyForm() {
  const form = $("key-form");
  const tenant = form.elements.tenant.value;
  form.reset();
  form.elements.tenant.value = tenant;
  delete form.dataset.editing;
  for (const name of ["tenant", "role", "name", "expires_at"]) form.elements[name].disabled = false;
  $("key-form-title").textContent = "Create a key";
  $("key-submit").textContent = "Create key";
  $("key-cancel").hidden = true;
}

async function submitKey(event) {
  event.preventDefault();
  const form = event.target;
  const editing = form.dataset.editing;
  hideNewKey();
  try {
    if (editing) {
      await api(`/admin/v1/keys/${encodeURIComponent(editing)}`, { method: "PATCH", body: limitsFrom(form) });
      say("key-result", "Quotas saved.");
    } else {
      const f = new FormData(form);
      const body = { tenant: f.get("tenant"), role: f.get("role"), ...limitsFrom(form) };
      if (f.get("name")) body.name = f.get("name");
      if (f.get("expires_at")) body.expires_at = `${f.get("expires_at")}T23:59:59Z`;
      const created = await api("/admin/v1/keys", { method: "POST", body });
      $("new-key-value").textContent = created.key;
      $("new-key").hidden = false;
      $("copy-key").textContent = "Copy";
      say("key-result", `Key ${created.prefix}… created for ${created.tenant} (${created.role}).`);
      $("copy-key").focus();
    }
    resetKeyForm();
    await Promise.all([loadKeys(), loadTenants()]);
  } catch (err) {
    say("key-result", plain(err), true);
  }
}

function hideNewKey() {
  $("new-key-value").textContent = "";
  $("new-key").hidden = true;
}

// -- usage -----------------------------------------------------------------------------------

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

async function loadUsage() {
  const form = $("usage-form");
  if (!form.elements.since.value) {
    form.elements.since.value = isoDay(new Date(Date.now() - 29 * 86400000));
  }
  const params = new URLSearchParams({ since: form.elements.since.value });
  const tenant = form.elements.tenant.value.trim();
  if (tenant) params.set("tenant", tenant);
  const { data } = await api(`/admin/v1/usage?${params}`);
  const totals = new Map(); // day -> tenant -> row
  for (const row of data) {
    const perDay = totals.get(row.day) ?? new Map();
    const sum = perDay.get(row.tenant) ?? { requests: 0, prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
    for (const k of Object.keys(sum)) sum[k] += row[k];
    perDay.set(row.tenant, sum);
    totals.set(row.day, perDay);
  }
  const days = [];
  const first = new Date(`${form.elements.since.value}T00:00:00Z`);
  const dataDays = [...totals.keys()].sort();
  const last = new Date(`${[isoDay(new Date()), ...dataDays].sort().at(-1)}T00:00:00Z`);
  for (let d = first; d <= last && days.length < 400; d = new Date(d.getTime() + 86400000)) {
    days.push(isoDay(d));
  }
  const series = [...new Set(data.map((r) => r.tenant))].sort();
  const value = (day, name) => totals.get(day)?.get(name)?.total_tokens ?? 0;
  const total = data.reduce((s, r) => s + r.total_tokens, 0);
  stackedBars($("usage-chart"), $("usage-legend"), days, series, value,
    `Tokens per day and tenant since ${form.elements.since.value}: ${compact(total)} in all`);
  const rows = [];
  for (const day of [...totals.keys()].sort().reverse()) {
    for (const [name, sum] of [...totals.get(day)].sort()) {
      const tr = document.createElement("tr");
      tr.append(td(day), td(name), td(sum.requests.toLocaleString(), "num"),
        td(sum.prompt_tokens.toLocaleString(), "num"), td(sum.completion_tokens.toLocaleString(), "num"),
        td(sum.total_tokens.toLocaleString(), "num"));
      rows.push(tr);
    }
  }
  $("usage-table").tBodies[0].replaceChildren(...rows);
}

// -- live latency ----------------------------------------------------------------------------

async function pollLatency() {
  try {
    const response = await request(state.key, "/metrics", { accept: "text/plain" });
    const text = await response.text();
    const now = Date.now();
    const snapshot = {
      t: now,
      ttft: parseHistogram(text, "sovllm:time_to_first_token_seconds"),
      itl: parseHistogram(text, "sovllm:inter_token_latency_seconds"),
    };
    const previous = state.snapshots.at(-1);
    if (previous && snapshot.ttft.count < previous.ttft.count) state.snapshots = []; // restarted
    state.snapshots.push(snapshot);
    // Keep one snapshot older than the window, to subtract from.
    while (state.snapshots.length > 2 && state.snapshots[1].t <= now - WINDOW_MS) state.snapshots.shift();
    renderLatency();
    renderKeyAges(parseGauge(text, "sovllm:key_age_seconds", "key"));
  } catch (err) {
    say("latency-updated", plain(err), true);
  }
}

function renderLatency() {
  const latest = state.snapshots.at(-1);
  const oldest = state.snapshots[0];
  const span = latest.t - oldest.t;
  const windowed = span > 0 ? {
    ttft: subtract(latest.ttft, oldest.ttft),
    itl: subtract(latest.itl, oldest.itl),
  } : null;
  const minutes = Math.max(span / 60000, 0);
  $("window-head").textContent = span >= WINDOW_MS - POLL_MS ? "Last 5 min"
    : `Last ${minutes < 1 ? `${Math.round(span / 1000)} s` : `${minutes.toFixed(1)} min`}`;
  const cells = {
    "ttft-p50": (h) => formatSeconds(quantile(0.5, h.ttft)),
    "ttft-p95": (h) => formatSeconds(quantile(0.95, h.ttft)),
    "itl-p50": (h) => formatSeconds(quantile(0.5, h.itl)),
    "itl-p95": (h) => formatSeconds(quantile(0.95, h.itl)),
    requests: (h) => h.ttft.count.toLocaleString(),
  };
  for (const [metric, show] of Object.entries(cells)) {
    const row = $("latency-table").querySelector(`tr[data-metric="${metric}"]`);
    row.querySelector(".total").textContent = show(latest);
    row.querySelector(".window").textContent =
      windowed && windowed.ttft && windowed.itl ? show(windowed) : "—";
  }
  say("latency-updated", `Updated ${new Date(latest.t).toLocaleTimeString()}.`);
}

const KEY_NAMES = { signing: "Audit signing key", master: "Content master key", pseudonym: "Pseudonym key" };

/** One row per key file the server reports, its age in days (the same /metrics scrape). */
function renderKeyAges(ages) {
  const rows = [...ages].sort().map(([name, seconds]) => {
    const tr = document.createElement("tr");
    tr.dataset.key = name;
    tr.append(td(KEY_NAMES[name] ?? name), td(`${(seconds / 86400).toFixed(1)} days`, "num"));
    return tr;
  });
  $("key-ages").tBodies[0].replaceChildren(...rows);
}

function startLatency() {
  $("poll-seconds").textContent = String(POLL_MS / 1000);
  pollLatency();
  state.timers.push(setInterval(pollLatency, POLL_MS));
}

// -- audit log -------------------------------------------------------------------------------

function showVerification(record) {
  const box = $("verify-last");
  if (!record) return;
  const { at, result } = record;
  const when = new Date(at).toLocaleString();
  box.classList.toggle("good", result.ok);
  box.classList.toggle("bad", !result.ok);
  box.dataset.ok = String(result.ok);
  const head = document.createElement("strong");
  head.textContent = result.ok ? "✓ The log verifies." : "✗ The log does NOT verify.";
  const detail = document.createElement("p");
  detail.textContent = `${result.summary} (last verified ${when}, by ${record.by}).`;
  const parts = [head, detail];
  if (!result.ok) {
    const list = document.createElement("ul");
    if (result.first_bad_entry !== null && result.first_bad_entry !== undefined) {
      const li = document.createElement("li");
      li.textContent = `First bad entry: #${result.first_bad_entry}`;
      list.append(li);
    }
    for (const problem of result.problems ?? []) {
      const li = document.createElement("li");
      li.textContent = String(problem);
      list.append(li);
    }
    parts.push(list);
  }
  box.replaceChildren(...parts);
}

// The server records every verification in the audit log itself: the last one shown here is
// the service's, whoever ran it, not this browser's.
function verificationRecord(result) {
  const actor = result.actor ?? {};
  return { at: result.verified_at, by: `${actor.tenant ?? "?"} (${actor.role ?? "?"})`, result };
}

async function verifyNow() {
  const control = $("verify-now");
  control.disabled = true;
  $("verify-last").textContent = "Verifying the whole log…";
  try {
    const result = await api("/admin/v1/audit/verify", { method: "POST" });
    showVerification(verificationRecord(result));
  } catch (err) {
    $("verify-last").textContent = plain(err);
  } finally {
    control.disabled = false;
  }
}

async function loadVerify() {
  try {
    showVerification(verificationRecord(await api("/admin/v1/audit/verify/last")));
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) $("verify-last").textContent = plain(err);
  }
}

async function downloadCheckpoint() {
  try {
    const { note, verifier_key: verifier } = await api("/admin/v1/audit/checkpoint");
    const size = note.split("\n")[1] ?? "latest";
    downloadText(`checkpoint-${size}.txt`, note);
    say("checkpoint-result", `Checkpoint of ${size} entries downloaded. Verifier key: ${verifier}`);
  } catch (err) {
    say("checkpoint-result", plain(err), true);
  }
}

async function searchAudit(event) {
  event?.preventDefault();
  const f = new FormData($("audit-form"));
  const params = new URLSearchParams();
  for (const name of ["request_id", "tenant", "since", "until", "limit"]) {
    const value = String(f.get(name) ?? "").trim();
    if (value) params.set(name, value);
  }
  try {
    const { data } = await api(`/admin/v1/audit/entries?${params}`);
    $("audit-table").tBodies[0].replaceChildren(...data.map(({ seq, entry }) => {
      const tr = document.createElement("tr");
      tr.dataset.seq = String(seq);
      const who = entry.principal ?? entry.actor ?? {};
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = entry.outcome ?? entry.action ?? "entry";
      const pre = document.createElement("pre");
      pre.className = "json";
      pre.textContent = JSON.stringify(entry, null, 2);
      details.append(summary, pre);
      const cell = td("");
      cell.append(details);
      tr.append(td(String(seq), "num"), td((entry.time ?? "").replace("T", " ").slice(0, 19)),
        td(entry.kind), td(entry.request_id ?? ""), td(who.tenant ?? ""), cell);
      return tr;
    }));
    say("audit-count", `${data.length} entr${data.length === 1 ? "y" : "ies"}, newest first.`);
  } catch (err) {
    say("audit-count", plain(err), true);
  }
}

// -- failed sign-ins -------------------------------------------------------------------------

// Loaded at sign-in and on "Refresh", never polled: each read is an entry in the audit log.
async function loadDenied() {
  try {
    const { data } = await api("/admin/v1/access/denied?limit=200");
    $("denied-table").tBodies[0].replaceChildren(...data.map((group) => {
      const tr = document.createElement("tr");
      tr.dataset.source = group.source;
      tr.dataset.prefix = group.key_prefix;
      tr.dataset.status = String(group.status);
      const prefix = group.key_prefix === "none" ? "no key"
        : group.key_prefix === "*" ? "any (not checked)" : `${group.key_prefix}…`;
      const minute = `${String(group.minute).replace("T", " ").slice(0, 16)}`
        + (group.pending ? " (this minute)" : "");
      const why = Object.entries(group.reasons ?? {}).map(([r, n]) => `${r}: ${n}`).join(", ");
      tr.append(td(minute), td(prefix), td(group.source), td(String(group.status), "num"),
        td(Number(group.count).toLocaleString(), "num"), td(why), td((group.paths ?? []).join(" ")));
      return tr;
    }));
    say("denied-count", data.length
      ? `${data.length} group${data.length === 1 ? "" : "s"}, newest first.`
      : "No failed sign-ins recorded.");
  } catch (err) {
    say("denied-count", plain(err), true);
  }
}

// -- privacy ---------------------------------------------------------------------------------

function askErase(event) {
  event.preventDefault();
  const subject = $("erase-subject").value.trim();
  if (!subject) return;
  $("erase-question").textContent = `Erase everything kept for the subject “${subject}”? `
    + "Their stored content becomes unreadable for good.";
  $("erase-confirm").hidden = false;
  $("erase-no").focus();
}

async function erase() {
  const subject = $("erase-subject").value.trim();
  $("erase-confirm").hidden = true;
  $("erase-error").hidden = true;
  try {
    const receipt = await api("/admin/v1/privacy/erase", { method: "POST", body: { subject } });
    const text = JSON.stringify(receipt, null, 2);
    $("erase-receipt-json").textContent = text;
    $("erase-receipt").hidden = false;
    $("download-receipt").onclick = () => downloadText(`erasure-receipt-${receipt.audit_entry}.json`, text, "application/json");
    $("erase-subject").value = "";
    $("download-receipt").focus();
  } catch (err) {
    $("erase-error").textContent = plain(err);
    $("erase-error").hidden = false;
  }
}

// -- replica pool and stops (present only when the server has them) --------------------------

async function probePool() {
  try {
    await loadPool();
  } catch {
    return; // no pool on this server, or not for this role: the panel stays absent
  }
  $("panel-pool").hidden = false;
  $("stop-controls").hidden = state.me.role !== "admin";
  renderNav([...PANELS[state.me.role].slice(0, 3), "pool", ...PANELS[state.me.role].slice(3)]
    .filter((name) => !$(`panel-${name}`).hidden));
  state.timers.push(setInterval(() => loadPool().catch((err) => say("pool-result", plain(err), true)), POLL_MS));
}

async function loadPool() {
  const pool = await api("/admin/v1/pool");
  let stops = { data: [] };
  try {
    stops = await api("/admin/v1/stops");
  } catch {
    // no stop switch on this server
  }
  $("pool-summary").textContent = `Routing: ${pool.policy}. Requests queued at the gateway: ${pool.queue_depth}.`;
  $("pool-table").tBodies[0].replaceChildren(...pool.replicas.map((r) => {
    state.models.add(r.model);
    const tr = document.createElement("tr");
    tr.dataset.replica = r.name;
    tr.append(td(r.name), td(r.kind), td(r.model), td(r.state, `state-${r.state}`),
      td(limit(r.running), "num"), td(limit(r.waiting), "num"), td(limit(r.outstanding), "num"),
      td(r.last_error ?? ""));
    return tr;
  }));
  $("stops-table").tBodies[0].replaceChildren(...stops.data.map((s) => {
    const tr = document.createElement("tr");
    tr.dataset.scope = s.scope;
    tr.dataset.target = s.target ?? "";
    const actor = typeof s.actor === "object" && s.actor !== null
      ? `${s.actor.tenant ?? "?"} (${s.actor.role ?? "?"})` : String(s.actor ?? "");
    const since = Number.isNaN(Date.parse(s.created_at)) ? String(s.created_at)
      : new Date(s.created_at).toLocaleString();
    tr.append(td(s.scope), td(s.target ?? "everything"), td(s.mode), td(s.reason), td(actor), td(since));
    const cell = td("");
    if (state.me.role === "admin") {
      cell.append(button("Resume", () => resume(s), "primary", `Resume ${s.scope} ${s.target ?? ""}`));
    }
    tr.append(cell);
    return tr;
  }));
  $("no-stops").hidden = stops.data.length > 0;
  updateTargets();
}

function updateTargets() {
  const list = $("stop-targets");
  const scope = $("stop-scope").value;
  const names = scope === "tenant" ? state.tenants.map((t) => t.name) : [...state.models];
  list.replaceChildren(...names.map((n) => new Option(n, n)));
  $("stop-target").disabled = scope === "all";
}

async function stop(event) {
  event.preventDefault();
  const f = new FormData(event.target);
  const scope = f.get("scope");
  const body = { scope, target: scope === "all" ? null : String(f.get("target") ?? "").trim() || null,
    mode: f.get("mode"), reason: String(f.get("reason")).trim() };
  try {
    await api("/admin/v1/stop", { method: "POST", body });
    say("pool-result", `Stopped (${body.mode}): ${body.scope} ${body.target ?? ""}.`);
    event.target.reset();
    updateTargets();
    await loadPool();
  } catch (err) {
    say("pool-result", plain(err), true);
  }
}

async function resume(s) {
  try {
    await api("/admin/v1/resume", { method: "POST", body: { scope: s.scope, target: s.target } });
    say("pool-result", `Resumed: ${s.scope} ${s.target ?? ""}.`);
    await loadPool();
  } catch (err) {
    say("pool-result", plain(err), true);
  }
}

// -- wiring ----------------------------------------------------------------------------------

const LOADERS = {
  tenants: loadTenants,
  keys: loadKeys,
  usage: loadUsage,
  latency: startLatency,
  verify: loadVerify,
  audit: searchAudit,
  denied: loadDenied,
  incidents: () => mountIncidents({ key: state.key, role: state.me.role, timers: state.timers }),
  energy: () => mountEnergy({ key: state.key }),
  models: () => mountModels({ key: state.key }),
  review: () => mountReview({ key: state.key, timers: state.timers }),
};

function wire() {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await signIn($("api-key").value.trim());
    } catch (err) {
      say("signin-error", plain(err), true);
      $("signin-error").hidden = false;
    }
  });
  $("sign-out").addEventListener("click", signOut);
  $("tenant-form").addEventListener("submit", submitTenant);
  $("tenant-cancel").addEventListener("click", resetTenantForm);
  $("key-form").addEventListener("submit", submitKey);
  $("key-cancel").addEventListener("click", resetKeyForm);
  $("hide-key").addEventListener("click", () => {
    hideNewKey();
    $("key-submit").focus();
  });
  $("copy-key").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("new-key-value").textContent);
      $("copy-key").textContent = "Copied";
    } catch {
      $("copy-key").textContent = "Select the key and copy it";
    }
  });
  $("usage-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadUsage().catch((err) => say("usage-legend", plain(err), true));
  });
  $("verify-now").addEventListener("click", verifyNow);
  $("download-checkpoint").addEventListener("click", downloadCheckpoint);
  $("audit-form").addEventListener("submit", searchAudit);
  $("denied-refresh").addEventListener("click", loadDenied);
  $("erase-form").addEventListener("submit", askErase);
  $("erase-yes").addEventListener("click", erase);
  $("erase-no").addEventListener("click", () => {
    $("erase-confirm").hidden = true;
    $("erase-subject").focus();
  });
  $("stop-form").addEventListener("submit", stop);
  $("stop-scope").addEventListener("change", updateTargets);
}

async function start() {
  wire();
  const saved = keys.get();
  if (!saved) {
    $("api-key").focus();
    return;
  }
  try {
    await signIn(saved);
  } catch (err) {
    keys.clear();
    say("signin-error", plain(err), true);
    $("signin-error").hidden = false;
  }
}

start();
