// Human review on the chat page (docs/oversight.md). Under the tenant's review policy `hold`, an
// answer is asked for without streaming and comes back pending; the page then asks
// GET /v1/chat/completions/{id} every few seconds until a reviewer decides, and shows the answer
// once approved. Under `sample`, an answer already shown may be queued for review: when a
// conversation is opened, its answers' reviews are looked up, so an override shows on the answer
// it disregards, with the reviewer's note.

import { getJSON, request } from "./api.js";

export const POLL_MS = 5000;
const FINAL = new Set(["none", "overridden"]);

/** The held answer's pending completion (the tenant's policy is hold: no stream). */
export async function askHeld(key, body, signal) {
  const response = await request(key, "/v1/chat/completions", {
    method: "POST", signal, body: { ...body, stream: false, stream_options: undefined },
  });
  return response.json();
}

/** Whether an answer's review may still change (a pending one is polled). */
export function pending(message) {
  return message.role === "assistant" && message.review?.status === "pending";
}

/** Look the reviews of a conversation's answers up: every answer not final when `all`, else the
 * pending ones. Returns whether any answer changed. */
export async function refreshReviews(key, conversation, all) {
  let changed = false;
  for (const m of conversation.messages) {
    const id = m.provenance?.request_id;
    if (m.role !== "assistant" || !id || FINAL.has(m.review?.status)) continue;
    if (!all && !pending(m)) continue;
    let data;
    try {
      data = await getJSON(key, `/v1/chat/completions/${encodeURIComponent(id)}`);
    } catch (err) {
      if (err.status === 404) {
        m.review = { status: "none" }; // never queued: nothing to show, never asked again
        changed = true;
      }
      continue;
    }
    const review = data.sovllm_review;
    const text = data.choices?.[0]?.message?.content;
    if (text && !m.content) {
      m.content = text;
      changed = true;
    }
    if (review && (review.status !== m.review?.status || review.note !== m.review?.note)) {
      m.review = review;
      changed = true;
    }
  }
  return changed;
}

/** The line under an answer that says where its review stands, or null. */
export function reviewNote(message) {
  const review = message.review;
  if (!review || review.status === "none") return null;
  const note = document.createElement("span");
  note.className = "review-status";
  note.dataset.review = review.status;
  if (review.status === "overridden") {
    note.classList.add("error");
    note.setAttribute("role", "alert");
    note.textContent = `Disregarded by a reviewer: ${review.note ?? ""} Do not use this answer.`;
  } else if (review.status === "pending" && review.mode === "hold") {
    note.textContent = "Held for review: a reviewer must approve this answer before you can read it.";
  } else if (review.status === "pending") {
    note.textContent = "Queued for review.";
  } else {
    note.textContent = "Approved by a reviewer.";
  }
  return note;
}
