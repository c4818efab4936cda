// Turning the server's rendered Markdown into DOM nodes, with a second line of defence.
//
// The server renders answers with raw HTML disabled, so its output is already safe.
// Here it is parsed into an inert <template> (no scripts run, nothing loads) and
// every element and attribute outside a small allow-list is dropped before the
// nodes reach the page. Raw model text never goes through here: it is shown with
// textContent while it streams.

const TAGS = new Set([
  "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code",
  "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td", "span",
]);
const ATTRS = { "*": new Set(["class"]), a: new Set(["href", "title"]), ol: new Set(["start"]) };
const SAFE_URL = /^(https?:|mailto:|#|\/(?!\/))/i;
const ALIGN = /^text-align:\s*(left|right|center)$/;

function clean(node) {
  for (const child of [...node.childNodes]) {
    if (child.nodeType === Node.TEXT_NODE) continue;
    if (child.nodeType !== Node.ELEMENT_NODE) { child.remove(); continue; }
    const tag = child.tagName.toLowerCase();
    if (!TAGS.has(tag)) {
      child.replaceWith(document.createTextNode(child.textContent)); // keep the words, not the tag
      continue;
    }
    for (const attr of [...child.attributes]) {
      const name = attr.name.toLowerCase();
      const align = name === "style" && ALIGN.exec(attr.value.trim().replace(/;$/, ""));
      if (align) child.classList.add(`align-${align[1]}`);
      const allowed = ATTRS["*"].has(name) || ATTRS[tag]?.has(name);
      if (!allowed || (name === "href" && !SAFE_URL.test(attr.value.trim()))) {
        child.removeAttribute(attr.name);
      }
    }
    if (tag === "a") {
      child.setAttribute("target", "_blank");
      child.setAttribute("rel", "noopener noreferrer");
    }
    clean(child);
  }
}

/** A DocumentFragment of the server's sanitized HTML, filtered once more. */
export function safeFragment(html) {
  const template = document.createElement("template");
  template.innerHTML = html;
  clean(template.content);
  return template.content;
}
