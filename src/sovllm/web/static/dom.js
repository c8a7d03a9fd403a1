// What every console panel builds its nodes with: elements whose text is set with
// textContent (never HTML from the server), and an error's words for the user.

import { ApiError } from "./api.js";

/** `el("td", {class: "num", text: "3"}, child…)`: "text" and "class" are set as such, any other
 * prop as an attribute. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

/** An API error's plain words (api.js), or any other error's message. */
export function plain(err) {
  return err instanceof ApiError ? err.plain : String(err?.message ?? err);
}
