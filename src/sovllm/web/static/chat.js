// The chat page: sign in with an API key, stream answers from /v1/chat/completions, keep the
// conversations in this browser. Model output is rendered by markdown.js as DOM text nodes only.

import { ApiError, getJSON, keyStore, request, sseEvents, streamError } from "./api.js";
import { renderInto } from "./markdown.js";
import { POLL_MS, askHeld, pending, refreshReviews, reviewNote } from "./chat_review.js";
import { ConversationStore, newConversation, titleFrom } from "./store.js";

const MAX_TOKENS = 512; // per answer; what a quota reserves is the prompt plus this
const TEMPERATURE_SLOT = "sovllm.chat.temperature";
const MODEL_SLOT = "sovllm.chat.model";
const keys = keyStore("sovllm.chat.key");
const $ = (id) => document.getElementById(id);

const state = {
  key: null,
  me: null,
  model: null,
  models: [],
  store: null,
  conversation: null,
  controller: null, // the AbortController of the answer being generated
};

// -- sign in ---------------------------------------------------------------------------------

async function signIn(key) {
  const me = await getJSON(key, "/v1/me");
  if (me.role === "auditor") {
    throw new ApiError(403, "forbidden", "auditor",
      "This key has the auditor role, which cannot chat. Auditors use the admin console.");
  }
  const models = await getJSON(key, "/v1/models");
  state.key = key;
  state.me = me;
  state.models = models.data;
  const saved = localStorage.getItem(MODEL_SLOT);
  state.model = models.data.find((m) => m.id === saved) ?? models.data[0];
  state.store = new ConversationStore(me.key_id);
  keys.set(key);
  showApp();
}

function signOut() {
  stopGeneration();
  keys.clear();
  Object.assign(state, { key: null, me: null, model: null, store: null, conversation: null });
  $("app").hidden = true;
  $("model-info").hidden = true;
  $("account").hidden = true;
  $("signin").hidden = false;
  $("api-key").value = "";
  $("api-key").focus();
}

function showSignInError(err) {
  const box = $("signin-error");
  box.textContent = err.plain ?? String(err.message ?? err);
  box.hidden = false;
}

function showApp() {
  const { me, model } = state;
  $("signin").hidden = true;
  $("signin-error").hidden = true;
  $("app").hidden = false;
  $("model-info").hidden = false;
  $("account").hidden = false;
  showModel(model);
  const select = $("model-select");
  select.replaceChildren(...state.models.map((m) => new Option(m.id, m.id)));
  select.value = model.id;
  select.hidden = state.models.length < 2;
  $("model-id").hidden = state.models.length > 1;
  $("who").textContent = `${me.tenant} · ${me.role}`;
  $("storage-policy").textContent = policyText(me);
  $("storage-policy").dataset.policy = me.content_policy;
  const saved = localStorage.getItem(TEMPERATURE_SLOT);
  if (saved !== null && [...$("temperature").options].some((o) => o.value === saved)) {
    $("temperature").value = saved;
  }
  const latest = state.store.all()[0];
  openConversation(latest && latest.messages.length === 0 ? latest : newConversation());
  $("prompt").focus();
}

function showModel(model) {
  $("model-id").textContent = model.id;
  const sha = $("model-sha");
  sha.textContent = model.sha256 ? `${model.sha256.slice(0, 12)}…` : "unknown";
  sha.title = model.sha256 ?? "";
  sha.dataset.sha256 = model.sha256 ?? "";
}

function policyText(me) {
  const days = me.content_retention_days;
  const tenant = `“${me.tenant}”`;
  let text;
  if (me.content_policy === "full") {
    text = `Your organisation's policy for ${tenant} also keeps your messages and answers on `
      + `the server, encrypted, for up to ${days} days, for audit. Deleting conversations here `
      + "does not delete that copy; your data-protection officer can erase it.";
  } else if (me.content_policy === "redacted") {
    text = `Your organisation's policy for ${tenant} also keeps your messages and answers on `
      + `the server, encrypted and with personal data masked, for up to ${days} days, for audit. `
      + "Deleting conversations here does not delete that copy; your data-protection officer "
      + "can erase it.";
  } else {
    text = `The service keeps none of your messages or answers for ${tenant}: its audit log `
      + "records only who asked when, and keyed hashes of the content.";
  }
  if (me.mask_prompts) text += " Personal data in your messages is masked before the model reads them.";
  return text;
}

// -- conversations ---------------------------------------------------------------------------

function openConversation(conversation) {
  stopGeneration();
  state.conversation = conversation;
  renderList();
  renderMessages();
  closeHistoryOnNarrow();
  checkReviews(true);
}

// An answer's review (chat_review.js): looked up when a conversation opens, polled while pending.
async function checkReviews(all) {
  const conversation = state.conversation;
  if (!conversation || state.controller) return;
  if (!all && !conversation.messages.some(pending)) return;
  // A tenant without review: look up only answers already known to be under review.
  const known = (m) => m.review && m.review.status !== "none" && m.review.status !== "overridden";
  if (state.me.review_policy === "none" && !conversation.messages.some(known)) return;
  if (await refreshReviews(state.key, conversation, all) && state.conversation === conversation
      && !state.controller) {
    state.store.save(conversation);
    renderMessages();
  }
}

function renderList() {
  const list = $("conversations");
  const all = state.store.all().filter((c) => c.messages.length > 0);
  list.replaceChildren(...all.map((c) => {
    const li = document.createElement("li");
    li.className = "conversation";
    const open = document.createElement("button");
    open.type = "button";
    open.className = "open-conversation";
    open.textContent = c.title;
    open.title = c.title;
    if (state.conversation && c.id === state.conversation.id) open.setAttribute("aria-current", "true");
    open.addEventListener("click", () => {
      openConversation(state.store.get(c.id) ?? newConversation());
      $("prompt").focus();
    });
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "delete-conversation";
    remove.textContent = "✕";
    remove.setAttribute("aria-label", `Delete the conversation “${c.title}”`);
    remove.addEventListener("click", () => {
      state.store.remove(c.id);
      if (state.conversation?.id === c.id) openConversation(newConversation());
      else renderList();
      $("new-chat").focus();
    });
    li.append(open, remove);
    return li;
  }));
  $("no-conversations").hidden = all.length > 0;
  $("delete-all").disabled = all.length === 0;
}

function deleteAll() {
  stopGeneration();
  state.store.clear();
  $("delete-confirm").hidden = true;
  $("delete-all").hidden = false;
  openConversation(newConversation());
  announce("All your conversations were deleted from this browser.");
  $("new-chat").focus();
}

// -- messages --------------------------------------------------------------------------------

function renderMessages() {
  const messages = state.conversation.messages;
  $("messages").replaceChildren(...messages.map((m, i) => messageItem(m, i === messages.length - 1)));
  $("empty").hidden = messages.length > 0;
  scrollToEnd(true);
}

function messageItem(message, last) {
  const li = document.createElement("li");
  li.className = `message ${message.role}`;
  const meta = document.createElement("div");
  meta.className = "meta";
  const body = document.createElement("div");
  body.className = "content";
  if (message.role === "user") {
    meta.textContent = "You";
    body.textContent = message.content; // shown as typed
    li.append(meta, body);
    return li;
  }
  li.dataset.status = message.status;
  if (message.review) li.dataset.review = message.review.status;
  if (message.status === "error") {
    li.classList.add("failed");
    meta.textContent = "Not answered";
    const error = document.createElement("p");
    error.className = "error";
    error.setAttribute("role", "alert");
    error.dataset.code = message.error?.code ?? "";
    error.textContent = message.error?.plain ?? "The answer failed.";
    li.append(meta, error);
    if (last) li.append(footer(message, true));
    return li;
  }
  // AI Act Art. 50: every generated answer is marked, for people and for machines.
  li.dataset.aiGenerated = "true";
  const prov = message.provenance;
  if (prov) {
    li.dataset.requestId = prov.request_id;
    li.dataset.model = prov.model;
    li.dataset.weightsSha256 = prov.weights_sha256;
  }
  const badge = document.createElement("span");
  badge.className = "badge ai";
  badge.textContent = "AI-generated";
  meta.append(badge);
  const model = document.createElement("span");
  model.className = "meta-model";
  model.textContent = prov ? prov.model : (state.model?.id ?? "");
  meta.append(" ", model);
  if (prov?.created) {
    const time = document.createElement("time");
    const when = new Date(prov.created * 1000);
    time.dateTime = when.toISOString();
    time.textContent = when.toLocaleString([], { dateStyle: "short", timeStyle: "short" });
    meta.append(" · ", time);
  }
  body.classList.add("md");
  if (message.status === "streaming") body.setAttribute("aria-busy", "true");
  renderInto(body, message.content);
  li.append(meta, body);
  li.append(footer(message, last));
  return li;
}

function footer(message, last) {
  const foot = document.createElement("div");
  foot.className = "answer-foot";
  const note = document.createElement("span");
  note.className = "answer-status";
  if (message.status === "stopped") note.textContent = "Stopped: you stopped this answer.";
  else if (message.status === "cut") note.textContent = `Stopped by an administrator. ${message.cut}`;
  else if (message.status === "interrupted") note.textContent = `Interrupted: ${message.error?.plain ?? ""}`;
  else if (message.status === "done" && message.finish === "length") {
    note.textContent = "The answer reached its length limit.";
  }
  if (message.provenance?.request_id) {
    const id = document.createElement("span");
    id.className = "request-id";
    id.textContent = `request ${message.provenance.request_id}`;
    foot.append(id);
  }
  if (message.usage) {
    const usage = document.createElement("span");
    usage.className = "usage";
    usage.textContent = `${message.usage.completion_tokens} tokens`;
    foot.append(usage);
  }
  foot.prepend(note);
  const review = reviewNote(message);
  if (review) foot.prepend(review);
  if (last && message.status !== "streaming") {
    const again = document.createElement("button");
    again.type = "button";
    again.className = "regenerate";
    again.textContent = message.status === "error" ? "Try again" : "Regenerate";
    again.addEventListener("click", regenerate);
    foot.append(again);
  }
  return foot;
}

function scrollToEnd(force = false) {
  const log = $("messages");
  const near = log.scrollHeight - log.scrollTop - log.clientHeight < 120;
  if (force || near) log.scrollTop = log.scrollHeight;
}

function announce(text) {
  $("status").textContent = text;
}

// -- generating ------------------------------------------------------------------------------

function setBusy(busy) {
  $("stop").hidden = !busy;
  $("send").disabled = busy;
  document.body.classList.toggle("generating", busy);
}

async function send(text) {
  if (state.controller || !text.trim()) return;
  const conversation = state.conversation;
  if (conversation.messages.length === 0) conversation.title = titleFrom(text);
  conversation.messages.push({ role: "user", content: text });
  $("prompt").value = "";
  await generate();
}

async function regenerate() {
  const messages = state.conversation.messages;
  if (state.controller || messages.length === 0) return;
  if (messages[messages.length - 1].role === "assistant") messages.pop();
  await generate();
  $("prompt").focus();
}

function stopGeneration() {
  state.controller?.abort();
}

async function generate() {
  const conversation = state.conversation;
  const history = conversation.messages
    .filter((m) => m.role === "user"
      || (m.status !== "error" && m.content && m.review?.status !== "overridden"))
    .map(({ role, content }) => ({ role, content }));
  const answer = { role: "assistant", content: "", status: "streaming" };
  conversation.messages.push(answer);
  state.store.save(conversation);
  renderList();
  renderMessages();
  const item = $("messages").lastElementChild;
  const body = item.querySelector(".content");
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  announce("Generating an answer…");
  try {
    if (state.me.review_policy === "hold") { // held for review: no stream, pending until approved
      const held = await askHeld(state.key, { model: state.model.id, messages: history,
        max_tokens: MAX_TOKENS, temperature: Number($("temperature").value) }, controller.signal);
      Object.assign(answer, { provenance: held.provenance, usage: held.usage,
        review: held.sovllm_review, status: "done" });
      announce("The answer is held for review; it appears here once a reviewer approves it.");
      return;
    }
    const response = await request(state.key, "/v1/chat/completions", {
      method: "POST",
      signal: controller.signal,
      accept: "text/event-stream",
      body: {
        model: state.model.id,
        messages: history,
        stream: true,
        stream_options: { include_usage: true },
        max_tokens: MAX_TOKENS,
        temperature: Number($("temperature").value),
      },
    });
    answer.aiGenerated = response.headers.get("x-sovllm-ai-generated") === "true";
    for await (const event of sseEvents(response.body)) {
      if (event.error) throw streamError(event.error);
      if (event.provenance && !answer.provenance) {
        answer.provenance = event.provenance;
        item.dataset.requestId = event.provenance.request_id;
      }
      const choice = event.choices?.[0];
      if (choice?.delta?.content) {
        answer.content += choice.delta.content;
        renderInto(body, answer.content);
        scrollToEnd();
      }
      if (choice?.finish_reason) answer.finish = choice.finish_reason;
      if (event.usage) answer.usage = event.usage;
      if (event.sovllm_stop) answer.cut = event.sovllm_stop.message; // the stop switch
    }
    answer.status = answer.cut ? "cut" : "done";
    announce(answer.cut ? `Stopped by an administrator. ${answer.cut}` : "The answer is complete.");
  } catch (err) {
    if (err.name === "AbortError") {
      answer.status = "stopped";
      announce("Stopped.");
    } else {
      answer.status = answer.content ? "interrupted" : "error";
      answer.error = { plain: err.plain ?? `The answer failed: ${err.message ?? err}`, code: err.code ?? null };
      announce(answer.error.plain);
      if (err.status === 401) {
        keys.clear();
      }
    }
  } finally {
    if (state.controller === controller) state.controller = null;
    setBusy(false);
    if (state.store && state.conversation === conversation) {
      state.store.save(conversation);
      renderList();
      renderMessages();
    }
  }
}

// -- narrow screens --------------------------------------------------------------------------

function closeHistoryOnNarrow() {
  $("history").classList.remove("open");
  $("toggle-history").setAttribute("aria-expanded", "false");
}

// -- wiring ----------------------------------------------------------------------------------

function wire() {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return;
    try {
      await signIn(key);
    } catch (err) {
      showSignInError(err);
    }
  });
  $("sign-out").addEventListener("click", signOut);
  $("new-chat").addEventListener("click", () => {
    openConversation(newConversation());
    $("prompt").focus();
  });
  $("toggle-history").addEventListener("click", () => {
    const open = $("history").classList.toggle("open");
    $("toggle-history").setAttribute("aria-expanded", String(open));
  });
  $("delete-all").addEventListener("click", () => {
    $("delete-all").hidden = true;
    $("delete-confirm").hidden = false;
    $("delete-no").focus();
  });
  $("delete-no").addEventListener("click", () => {
    $("delete-confirm").hidden = true;
    $("delete-all").hidden = false;
    $("delete-all").focus();
  });
  $("delete-yes").addEventListener("click", deleteAll);
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send($("prompt").value);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send($("prompt").value);
    }
  });
  $("stop").addEventListener("click", () => {
    stopGeneration();
    $("prompt").focus();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.controller) stopGeneration();
  });
  $("model-select").addEventListener("change", () => {
    const chosen = state.models.find((m) => m.id === $("model-select").value);
    if (!chosen) return;
    state.model = chosen;
    localStorage.setItem(MODEL_SLOT, chosen.id);
    showModel(chosen);
  });
  $("temperature").addEventListener("change", () => {
    localStorage.setItem(TEMPERATURE_SLOT, $("temperature").value);
  });
  $("messages").addEventListener("click", async (event) => {
    const button = event.target.closest(".copy-code");
    if (!button) return;
    const code = button.closest(".code-block").querySelector("code").textContent;
    try {
      await navigator.clipboard.writeText(code);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy failed";
    }
  });
}

async function start() {
  wire();
  setInterval(() => checkReviews(false), POLL_MS);
  const saved = keys.get();
  if (!saved) {
    $("api-key").focus();
    return;
  }
  try {
    await signIn(saved);
  } catch (err) {
    keys.clear();
    showSignInError(err);
  }
}

start();
