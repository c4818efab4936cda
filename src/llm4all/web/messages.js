// The conversation: messages, the answer being streamed, and what can be done with each.
//
// Answers are shown from the server's sanitized HTML (see sanitize.js); while an
// answer streams, the text that arrived since the last rendered snapshot is shown
// as plain text (textContent) until the next snapshot replaces it.

import { copyText, fill, h, icon, iconButton, toast } from "./dom.js";
import { safeFragment } from "./sanitize.js";
import { suggestionView } from "./share.js";
import { toolCallView, toolMessageView } from "./tools.js";

/** Copy buttons and language labels on the code blocks of a rendered answer. */
function decorateCode(root) {
  for (const pre of root.querySelectorAll("pre")) {
    if (pre.parentElement.classList.contains("code-block")) continue;
    const code = pre.querySelector("code");
    const lang = [...(code?.classList || [])].find((c) => c.startsWith("language-"));
    const copy = h("button", { type: "button", class: "copy-code", title: "Copy code", "aria-label": "Copy code" }, icon("copy"), "Copy");
    copy.addEventListener("click", async () => {
      if (await copyText(pre.textContent)) {
        fill(copy, icon("check"), "Copied");
        setTimeout(() => fill(copy, icon("copy"), "Copy"), 1500);
      }
    });
    const head = h("div", { class: "code-head" }, h("span", {}, lang ? lang.slice(9) : "text"), copy);
    const block = h("div", { class: "code-block" });
    pre.replaceWith(block);
    block.append(head, pre);
  }
}

function renderedAnswer(html) {
  const md = h("div", { class: "md" });
  md.append(safeFragment(html || ""));
  decorateCode(md);
  return md;
}

function stats(message) {
  const parts = [];
  if (message.model) parts.push(message.model);
  if (message.completion_tokens) parts.push(`${message.completion_tokens} tokens`);
  if (message.tokens_per_second) parts.push(`${message.tokens_per_second.toFixed(1)} tok/s`);
  if (message.prompt_tokens) parts.push(`${message.prompt_tokens} in prompt`);
  if (message.time_to_first_token) parts.push(`${message.time_to_first_token.toFixed(2)} s to first token`);
  const notes = { cancelled: "stopped", length: "cut at the token limit" };
  const note = notes[message.finish_reason];
  return h(
    "span",
    { class: "stats" },
    parts.join(" · "),
    note ? h("span", { class: "badge" }, note) : null,
  );
}

/** The LocalDocs excerpts an answer was given, numbered as the model was asked to cite them. */
function sourcesView(sources) {
  if (!sources || !sources.length) return null;
  const items = sources.map((s, i) => {
    const place = [s.file || s.path || s.title, s.location].filter(Boolean).join(" · ");
    return h(
      "li",
      { title: s.path || "" },
      h("span", { class: "source-title" }, `[${s.index ?? i + 1}] ${place || "source"}`),
      s.heading ? h("span", { class: "source-heading" }, ` — ${s.heading}`) : null,
      s.excerpt || s.text ? h("p", { class: "source-text" }, s.excerpt || s.text) : null,
    );
  });
  return h(
    "details",
    { class: "sources" },
    h("summary", {}, icon("book"), `Sources (${sources.length})`),
    h("ol", {}, items),
  );
}

function rateButtons(message, actions) {
  const up = iconButton("up", "Good answer", () => actions.rate(message, message.rating === 1 ? null : 1));
  const down = iconButton("down", "Bad answer", () => actions.rate(message, message.rating === -1 ? null : -1));
  up.classList.toggle("active", message.rating === 1);
  down.classList.toggle("active", message.rating === -1);
  up.setAttribute("aria-pressed", String(message.rating === 1));
  down.setAttribute("aria-pressed", String(message.rating === -1));
  return [up, down];
}

function copyButton(message) {
  return iconButton("copy", "Copy", async () => {
    if (await copyText(message.content)) toast("Copied to the clipboard");
  });
}

function assistantView(message, actions, last) {
  return h(
    "article",
    { class: "msg assistant", dataset: { id: message.id, role: "assistant", finish: message.finish_reason || "" } },
    h("div", { class: "avatar" }, icon("chat")),
    h(
      "div",
      { class: "body" },
      renderedAnswer(message.html),
      sourcesView(message.sources),
      suggestionView(message),
      h(
        "footer",
        { class: "meta" },
        stats(message),
        h(
          "span",
          { class: "actions" },
          copyButton(message),
          last ? iconButton("refresh", "Regenerate", () => actions.regenerate(message)) : null,
          iconButton("edit", "Suggest a better answer", (e) => actions.suggest(message, e.currentTarget.closest("article"))),
          ...rateButtons(message, actions),
        ),
      ),
    ),
  );
}

function userView(message, actions, last) {
  const text = h("div", { class: "text" }, message.content);
  const body = h("div", { class: "body" }, text);
  const edit = () => {
    const area = h("textarea", { class: "edit-area", rows: Math.min(12, message.content.split("\n").length + 1) });
    area.value = message.content;
    const save = () => area.value.trim() && actions.edit(message, area.value);
    area.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); save(); }
      if (e.key === "Escape") { e.stopPropagation(); cancel(); }
    });
    const cancel = () => {
      body.classList.remove("editing");
      fill(body, text, footer);
    };
    body.classList.add("editing");
    fill(
      body,
      area,
      h(
        "div",
        { class: "edit-buttons" },
        h("button", { type: "button", class: "ghost", onclick: cancel }, "Cancel"),
        h("button", { type: "button", class: "primary", onclick: save }, "Save & send"),
      ),
    );
    area.focus();
  };
  const footer = h(
    "footer",
    { class: "actions" },
    last ? iconButton("refresh", "Answer again", () => actions.regenerate(null)) : null,
    copyButton(message),
    iconButton("edit", "Edit and resend", edit),
  );
  body.append(footer);
  return h("article", { class: "msg user", dataset: { id: message.id, role: "user" } }, body);
}

/** One stored message as an element. */
export function messageView(message, actions, last = false) {
  if (message.role === "assistant") return assistantView(message, actions, last);
  if (message.role === "user") return userView(message, actions, last);
  if (message.role === "tool") return toolMessageView(message);
  return h("article", { class: "msg system" }, h("div", { class: "body" }, message.content));
}

/** All of a chat's messages; only the last one offers to regenerate. */
export function renderMessages(container, messages, actions) {
  const views = messages.map((m, i) => messageView(m, actions, i === messages.length - 1));
  fill(container, ...views);
}

/** The answer being written: plain text as it arrives, the server's HTML as it comes. */
export class StreamingAnswer {
  constructor() {
    this.calls = h("div", { class: "tool-calls" });
    this.md = h("div", { class: "md" });
    this.tail = h("div", { class: "tail" });
    this.status = h("span", { class: "stats" }, "Loading the model…");
    this.el = h(
      "article",
      { class: "msg assistant streaming", dataset: { role: "assistant" } },
      h("div", { class: "avatar" }, icon("chat")),
      h(
        "div",
        { class: "body" },
        this.calls,
        this.md,
        this.tail,
        h("div", { class: "typing", "aria-label": "writing" }, h("i"), h("i"), h("i")),
        h("footer", { class: "meta" }, this.status),
      ),
    );
    this.text = "";
  }

  started(model) {
    fill(this.status, `${model} is writing…`);
  }

  delta(text) {
    this.text += text;
    this.tail.textContent = this.text;
  }

  html(html) {
    this.md.replaceChildren(safeFragment(html));
    decorateCode(this.md);
    this.text = "";
    this.tail.textContent = "";
  }

  /** A tool call, shown or updated in place (by its id); answer(allow) for Allow / Deny. */
  toolCall(call, answer) {
    const view = toolCallView(call, answer);
    const old = [...this.calls.children].find((c) => c.dataset.callId === (call.id || ""));
    if (old) old.replaceWith(view);
    else this.calls.append(view);
  }

  /** What was shown of this turn was a tool call, not the answer: clear it. */
  reset() {
    this.md.replaceChildren();
    this.text = "";
    this.tail.textContent = "";
  }

  error(message) {
    this.el.classList.remove("streaming");
    this.el.classList.add("failed");
    this.el.querySelector(".typing")?.remove();
    fill(this.status, h("span", { class: "error-text" }, message));
  }
}
