// Calls to the sovllm API, shared by the chat page and the admin console.
// The API key travels only in the Authorization header, never in a URL, and is kept in the
// tab's session storage: it is gone when the tab closes.

export class ApiError extends Error {
  constructor(status, code, message, plain) {
    super(message);
    this.status = status;
    this.code = code;
    this.plain = plain; // the same in plain words, for people
  }
}

export const keyStore = (slot) => ({
  get: () => sessionStorage.getItem(slot),
  set: (key) => sessionStorage.setItem(slot, key),
  clear: () => sessionStorage.removeItem(slot),
});

/** fetch() with the key in a header; throws ApiError with plain words on any failure. */
export async function request(key, path, { method = "GET", body, signal, accept } = {}) {
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (accept) headers.Accept = accept;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", String(err),
      "The service could not be reached. Check the connection and try again.");
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

export async function getJSON(key, path, options) {
  return (await request(key, path, options)).json();
}

/** The ApiError for a response that is not ok (OpenAI's error shape). */
export async function errorFrom(response) {
  let error = {};
  try {
    error = (await response.json()).error ?? {};
  } catch {
    // not JSON: keep the status line
  }
  const message = error.message || `${response.status} ${response.statusText}`;
  const plain = plainWords(response.status, error.code ?? null, message, response.headers);
  return new ApiError(response.status, error.code ?? null, message, plain);
}

/** An error from inside a stream (an SSE `data: {"error": …}` event). */
export function streamError(error) {
  const message = error?.message || "The answer failed.";
  const status = error?.code === "service_stopped" ? 503 : 500;
  return new ApiError(status, error?.code ?? null, message,
    plainWords(status, error?.code ?? null, message, new Headers()));
}

// "1m5s", "6m0s", "120ms", "3s" (OpenAI's x-ratelimit-reset-*) -> seconds
export function parseDuration(text) {
  if (!text) return null;
  let total = 0;
  let matched = false;
  for (const [, n, unit] of String(text).matchAll(/(\d+(?:\.\d+)?)(ms|h|m|s)/g)) {
    matched = true;
    total += parseFloat(n) * { ms: 0.001, s: 1, m: 60, h: 3600 }[unit];
  }
  return matched ? total : null;
}

/** Seconds until the caller may try again, from Retry-After or the x-ratelimit-reset headers. */
export function retryAfterSeconds(headers) {
  const retry = headers.get("retry-after");
  if (retry && /^\d+$/.test(retry.trim())) return parseInt(retry, 10);
  const resets = ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
    .map((h) => parseDuration(headers.get(h)))
    .filter((v) => v !== null);
  return resets.length ? Math.max(...resets) : null;
}

export function formatWait(seconds, now = new Date()) {
  const at = new Date(now.getTime() + seconds * 1000);
  const sameDay = at.toDateString() === now.toDateString();
  const when = sameDay
    ? at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : at.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  const span = seconds < 90 ? `${Math.ceil(seconds)} s`
    : seconds < 5400 ? `${Math.ceil(seconds / 60)} min`
    : seconds < 172800 ? `${Math.round(seconds / 3600)} h`
    : `${Math.round(seconds / 86400)} days`;
  return { when, span, at };
}

export function plainWords(status, code, message, headers) {
  if (status === 0) return message;
  if (status === 401) {
    return "This key was not accepted: it may be mistyped, expired or revoked. Sign in again "
      + "with a valid key.";
  }
  if (status === 403) return `Your key's role may not do this. (${message})`;
  if (code === "service_stopped") {
    return "Stopped by an administrator: no answers can be generated right now. Try again "
      + `later. (${message})`;
  }
  if (status === 429) {
    const wait = retryAfterSeconds(headers);
    const again = wait === null ? "" : (() => {
      const { when, span } = formatWait(wait);
      return ` You can send again at ${when} (in ${span}).`;
    })();
    switch (code) {
      case "queue_full":
        return `The service is busy: too many requests are waiting.${again}`;
      case "insufficient_quota":
        return `You have reached your quota: the monthly token budget is used up.${again}`;
      case "concurrency_limit_exceeded":
        return "You have reached your quota of answers generated at the same time. Wait for "
          + "one to finish, then send again.";
      case "request_too_large":
        return "This conversation is larger than your quota of tokens per minute allows. Start "
          + "a new chat or send a shorter message.";
      default:
        return `You have reached your quota: ${quotaWhat(message)}.${again}`;
    }
  }
  if (code === "context_length_exceeded") {
    const m = /maximum context length is (\d+)/.exec(message);
    const limit = m ? ` of ${Number(m[1]).toLocaleString()} tokens` : "";
    return `This conversation is too long for the model: it can read a context${limit} `
      + "(the whole conversation and the answer together). Start a new chat, or send a "
      + "shorter message.";
  }
  if (code === "model_not_found") return "The model has changed on the server. Reload the page.";
  if (status === 503 || status >= 500) {
    return `The model is not available right now. Try again in a moment. (${message})`;
  }
  return message;
}

function quotaWhat(message) {
  const m = /(\d[\d,]*) (requests|tokens) per minute/.exec(message);
  return m ? `${m[1]} ${m[2]} per minute` : "too many requests in the last minute";
}

/** The server's Server-Sent Events as parsed JSON objects, until [DONE]. */
export async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** Download `text` as a file, without putting anything in a URL the server sees. */
export function downloadText(filename, text, type = "text/plain") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
