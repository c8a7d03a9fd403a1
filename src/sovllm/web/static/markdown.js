// A small Markdown renderer for model output. It never parses HTML: every piece of text becomes
// a DOM text node (createTextNode / textContent), so "<script>" or "<img onerror>" in an answer
// is shown as those characters and never runs. Links keep only http(s) and mailto addresses.
//
// Supported: fenced code blocks (``` or ~~~, an unclosed fence runs to the end, as while an answer
// streams), headings, paragraphs with line breaks, bullet and numbered lists (nested by indent),
// block quotes, horizontal rules, inline code, **bold**, *italic*, ~~strike~~, [links](url),
// <https://autolinks> and bare https:// addresses.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;

/** An http(s) or mailto address as written, or null if the address is anything else. */
export function safeHref(raw) {
  const text = String(raw).trim();
  // Control characters and spaces can hide a scheme from naive checks ("java\tscript:").
  if (!text || /[\u0000-\u0020\u007f-\u009f]/.test(text)) return null;
  if (!/^(https?:\/\/|mailto:)/i.test(text)) return null;
  let url;
  try {
    url = new URL(text);
  } catch {
    return null;
  }
  return ["http:", "https:", "mailto:"].includes(url.protocol) ? url.href : null;
}

function el(tag, cls) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  return node;
}

function link(href, parent, label) {
  const a = el("a");
  a.href = href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  if (typeof label === "string") a.textContent = label;
  parent.appendChild(a);
  return a;
}

// Inline syntax, tried together; the earliest match wins.
const INLINE = new RegExp(
  [
    /(`+)([\s\S]*?[^`])\1(?!`)/.source, // 1,2: code span
    /\*\*(?=\S)([\s\S]*?\S)\*\*/.source, // 3: bold
    /(?<![\w])__(?=\S)([\s\S]*?\S)__(?![\w])/.source, // 4: bold
    /\*(?=[^\s*])([\s\S]*?[^\s*])\*/.source, // 5: italic
    /(?<![\w])_(?=[^\s_])([\s\S]*?[^\s_])_(?![\w])/.source, // 6: italic
    /~~(?=\S)([\s\S]*?\S)~~/.source, // 7: strike
    /\[([^\]\n]+)\]\(\s*<?([^\s()<>]*(?:\([^\s()<>]*\)[^\s()<>]*)*)>?(?:\s+"[^"]*")?\s*\)/.source, // 8,9: link
    /<((?:https?:\/\/|mailto:)[^\s<>]+)>/.source, // 10: autolink
    /(https?:\/\/[^\s<>"'`]*[^\s<>"'`.,;:!?)\]*_])/.source, // 11: bare address
  ].join("|"),
  "g",
);

/** Append the inline Markdown of `text` to `parent`, as DOM nodes. */
export function renderInline(text, parent, inLink = false) {
  let last = 0;
  const re = new RegExp(INLINE.source, "g"); // a fresh lastIndex: this function recurses
  let m;
  while ((m = re.exec(text)) !== null) {
    if (m.index > last) appendText(parent, text.slice(last, m.index));
    last = re.lastIndex;
    if (m[2] !== undefined) {
      const code = el("code");
      let body = m[2];
      if (/^ .* $/.test(body) && body.trim()) body = body.slice(1, -1);
      code.textContent = body;
      parent.appendChild(code);
    } else if (m[3] !== undefined || m[4] !== undefined) {
      renderInline(m[3] ?? m[4], parent.appendChild(el("strong")), inLink);
    } else if (m[5] !== undefined || m[6] !== undefined) {
      renderInline(m[5] ?? m[6], parent.appendChild(el("em")), inLink);
    } else if (m[7] !== undefined) {
      renderInline(m[7], parent.appendChild(el("del")), inLink);
    } else if (m[8] !== undefined) {
      const href = inLink ? null : safeHref(m[9]);
      if (href) renderInline(m[8], link(href, parent), true);
      else appendText(parent, m[0]); // an unsafe or nested link stays visible as text
    } else {
      const address = m[10] ?? m[11];
      const href = inLink ? null : safeHref(address);
      if (href) link(href, parent, address);
      else appendText(parent, m[0]);
    }
  }
  if (last < text.length) appendText(parent, text.slice(last));
}

function appendText(parent, text) {
  parent.appendChild(document.createTextNode(text));
}

function paragraph(lines, parent) {
  const p = el("p");
  lines.forEach((line, i) => {
    if (i > 0) p.appendChild(el("br"));
    renderInline(line.trim(), p);
  });
  parent.appendChild(p);
}

function codeBlock(lang, lines, parent, open) {
  const figure = el("div", "code-block");
  const bar = el("div", "code-bar");
  const name = el("span", "code-lang");
  name.textContent = lang || "code";
  bar.appendChild(name);
  const copy = el("button", "copy-code");
  copy.type = "button";
  copy.textContent = "Copy";
  copy.setAttribute("aria-label", `Copy ${lang || "code"} to the clipboard`);
  bar.appendChild(copy);
  figure.appendChild(bar);
  const pre = el("pre");
  const code = el("code");
  if (lang) code.dataset.lang = lang;
  code.textContent = lines.join("\n");
  pre.appendChild(code);
  pre.tabIndex = 0; // a long line scrolls sideways: reachable with the keyboard
  figure.appendChild(pre);
  if (open) figure.dataset.open = "true";
  parent.appendChild(figure);
}

function indentOf(s) {
  const m = /^(\s*)/.exec(s);
  return m[1].replace(/\t/g, "    ").length;
}

// A list starting at lines[i]; returns the index after it.
function list(lines, i, parent) {
  const first = ITEM.exec(lines[i]);
  const base = indentOf(first[1]);
  const ordered = /\d/.test(first[2]);
  const node = el(ordered ? "ol" : "ul");
  if (ordered) {
    const start = parseInt(first[2], 10);
    if (start !== 1) node.start = start;
  }
  let item = null;
  let buffer = [];
  const flush = () => {
    if (item && buffer.length) blocks(buffer, item, true);
    buffer = [];
  };
  while (i < lines.length) {
    const line = lines[i];
    const m = ITEM.exec(line);
    if (m && indentOf(m[1]) === base && /\d/.test(m[2]) === ordered) {
      flush();
      item = el("li");
      node.appendChild(item);
      buffer.push(m[3]);
      i++;
      continue;
    }
    if (m && indentOf(m[1]) <= base) break; // outdented, or a list of the other kind
    if (!line.trim()) {
      // A blank line ends the list unless the next line continues it.
      const next = lines[i + 1];
      const following = next === undefined ? null : ITEM.exec(next);
      const sameList = following && indentOf(following[1]) === base
        && /\d/.test(following[2]) === ordered;
      if (next === undefined || (indentOf(next) <= base && !sameList)) break;
      buffer.push("");
      i++;
      continue;
    }
    if (indentOf(line) > base || m) {
      buffer.push(line.slice(Math.min(indentOf(line), base + 2)));
      i++;
      continue;
    }
    // A lazy continuation of the item's text, unless another block starts here.
    if (FENCE.test(line) || HEADING.test(line) || QUOTE.test(line) || RULE.test(line)) break;
    buffer.push(line);
    i++;
  }
  flush();
  parent.appendChild(node);
  return i;
}

function blocks(lines, parent, tight = false) {
  let i = 0;
  let para = [];
  const endPara = () => {
    if (!para.length) return;
    if (tight && parent.tagName === "LI" && !parent.childNodes.length) {
      para.forEach((line, k) => {
        if (k > 0) parent.appendChild(el("br"));
        renderInline(line.trim(), parent);
      });
    } else {
      paragraph(para, parent);
    }
    para = [];
  };
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if ((m = FENCE.exec(line))) {
      endPara();
      const fence = m[1];
      const body = [];
      i++;
      let closed = false;
      while (i < lines.length) {
        const close = new RegExp(`^ {0,3}${fence[0] === "`" ? "`" : "~"}{${fence.length},}\\s*$`);
        if (close.test(lines[i])) {
          closed = true;
          i++;
          break;
        }
        body.push(lines[i]);
        i++;
      }
      codeBlock(m[2], body, parent, !closed);
      continue;
    }
    if (!line.trim()) {
      endPara();
      i++;
      continue;
    }
    if ((m = HEADING.exec(line))) {
      endPara();
      const level = Math.min(m[1].length + 2, 6); // the page owns h1 and h2
      const h = el(`h${level}`);
      renderInline(m[2], h);
      parent.appendChild(h);
      i++;
      continue;
    }
    if (RULE.test(line) && !para.length) {
      parent.appendChild(el("hr"));
      i++;
      continue;
    }
    if (QUOTE.test(line)) {
      endPara();
      const body = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        body.push(m[1]);
        i++;
      }
      blocks(body, parent.appendChild(el("blockquote")));
      continue;
    }
    if (ITEM.test(line)) {
      endPara();
      i = list(lines, i, parent);
      continue;
    }
    para.push(line);
    i++;
  }
  endPara();
}

/** The Markdown `text` as a DocumentFragment of safe DOM nodes. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  blocks(String(text ?? "").replace(/\r\n?/g, "\n").split("\n"), fragment);
  return fragment;
}

/** Replace the children of `element` with the rendered Markdown of `text`. */
export function renderInto(element, text) {
  element.replaceChildren(renderMarkdown(text));
}
