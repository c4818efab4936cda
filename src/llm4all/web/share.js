// Sharing chats as public training data (off by default), and suggesting better answers.
//
// One dialog serves the setting (the notice, the opt-in, the attribution name) and
// the per-chat share (a preview of exactly the JSON that would leave the machine,
// optionally scrubbed). The preview is the server's own body text, shown as plain
// text; nothing is sent until "Share this chat" is pressed. See docs/sharing.md.

import { api } from "./api.js";
import { fill, h, icon, iconButton, toast } from "./dom.js";

const STATES = { pending: "queued", sent: "shared", refused: "refused", withdrawn: "withdrawn" };

export class ShareDialog {
  /** actions: chat() → the open chat (or null) */
  constructor(dialog, actions) {
    this.dialog = dialog;
    this.actions = actions;
    this.settings = null;
  }

  async load() {
    this.settings = await api.get("/share");
    return this.settings;
  }

  head(title) {
    return h(
      "header",
      { class: "panel-head" },
      h("h2", {}, icon("share"), title),
      iconButton("x", "Close", () => this.dialog.close()),
    );
  }

  endpointNote(s) {
    return s.configured
      ? h("p", { class: "muted" }, `Chats go to ${s.endpoint}.`)
      : h("p", { class: "share-warning" }, "No datalake is set yet, so nothing can be sent: on this computer, run ",
        h("code", {}, "llm4all share on --endpoint URL"), ".");
  }

  /** The setting: the notice, the opt-in and the attribution name. */
  async openSettings() {
    const s = await this.load();
    const enabled = h("input", { type: "checkbox", id: "share-enabled" });
    enabled.checked = s.enabled;
    const name = h("input", { id: "share-name", type: "text", maxlength: 128, placeholder: "anonymous", autocomplete: "off" });
    name.value = s.attribution || "";
    const queue = Object.entries(s.queue).filter(([, n]) => n).map(([k, n]) => `${n} ${STATES[k] || k}`);
    const form = h(
      "form",
      {
        class: "share-form",
        onsubmit: async (e) => {
          e.preventDefault();
          try {
            this.settings = await api.put("/share", { enabled: enabled.checked, attribution: name.value.trim() || null });
            toast(this.settings.enabled ? "Sharing is on: share chats one by one" : "Sharing is off: nothing will be sent");
            this.dialog.close();
          } catch (err) {
            toast(err.message, "error");
          }
        },
      },
      this.head("Share chats as training data"),
      h("p", { class: "share-notice" }, s.notice),
      h("label", { class: "check" }, enabled, "Let me share chats I choose as public training data"),
      h("div", { class: "field" }, h("label", { for: "share-name" }, "Attribution name (optional)"), name),
      this.endpointNote(s),
      queue.length ? h("p", { class: "muted" }, `Shared chats: ${queue.join(", ")}.`) : null,
      h(
        "div",
        { class: "panel-buttons" },
        s.configured ? this.withdrawButton() : null,
        h("button", { type: "submit", class: "primary", id: "share-save" }, "Save"),
      ),
    );
    fill(this.dialog, form);
    this.dialog.showModal();
  }

  /** Ask the datalake to delete what this machine shared (a second click confirms). */
  withdrawButton() {
    const button = h("button", { type: "button", class: "ghost danger-text", id: "share-withdraw" }, "Delete what I shared");
    button.addEventListener("click", async () => {
      if (!button.dataset.armed) {
        button.dataset.armed = "1";
        fill(button, "Click again: delete from the datalake");
        return;
      }
      button.disabled = true;
      try {
        const { deleted } = await api.post("/share/withdraw");
        toast(`The datalake deleted ${deleted} chat${deleted === 1 ? "" : "s"} shared from here`);
        this.dialog.close();
      } catch (err) {
        toast(err.message, "error");
        button.disabled = false;
      }
    });
    return button;
  }

  /** The preview of the open chat, and the button that shares it. */
  async openChat() {
    const chat = this.actions.chat();
    if (!chat || !chat.messages?.length) {
      toast("Open a chat with an answer to share it");
      return;
    }
    const s = await this.load();
    const scrub = h("input", { type: "checkbox", id: "share-scrub" });
    const summary = h("p", { class: "muted", id: "share-summary" });
    const body = h("pre", { class: "share-preview", id: "share-preview", tabindex: 0 });
    const send = h("button", { type: "button", class: "primary", id: "share-send", disabled: !s.enabled }, "Share this chat");
    let asked = 0; // only the latest preview is shown (the box may change while one loads)
    const show = async () => {
      const mine = ++asked;
      const scrubbed = scrub.checked;
      send.disabled = true;
      try {
        const preview = await api.post(`/chats/${chat.id}/share/preview`, { scrub: scrubbed });
        if (mine !== asked) return;
        body.textContent = preview.body; // exactly what would be sent, as text
        const state = preview.state ? ` This chat is ${STATES[preview.state] || preview.state}.` : "";
        summary.textContent = (scrubbed ? `Scrubbed: ${preview.summary}.` : "Not scrubbed.") + state;
        send.disabled = !s.enabled;
      } catch (err) {
        if (mine !== asked) return;
        body.textContent = "";
        summary.textContent = err.message;
        send.disabled = true;
      }
    };
    scrub.addEventListener("change", show);
    send.addEventListener("click", async () => {
      send.disabled = true;
      try {
        const result = await api.post(`/chats/${chat.id}/share`, { scrub: scrub.checked });
        toast(result.state === "sent" ? "Shared: thank you" : result.message, result.state === "refused" ? "error" : "info");
        this.dialog.close();
      } catch (err) {
        toast(err.message, "error");
        send.disabled = false;
      }
    });
    const off = s.enabled
      ? null
      : h("p", { class: "share-warning" }, "Sharing is off. ",
        h("button", { type: "button", class: "link", onclick: () => this.openSettings() }, "Turn it on"),
        " to share this chat.");
    fill(
      this.dialog,
      this.head("Share this chat"),
      h("p", { class: "share-notice" }, s.notice),
      off,
      s.enabled ? this.endpointNote(s) : null,
      h("label", { class: "check" }, scrub, "Scrub e-mail addresses, phone numbers, file paths and document names"),
      summary,
      body,
      h(
        "div",
        { class: "panel-buttons" },
        h("button", { type: "button", class: "ghost", onclick: () => this.dialog.close() }, "Cancel"),
        send,
      ),
    );
    this.dialog.showModal();
    await show();
  }
}

/** The better answer the user suggested for an answer, shown under it. */
export function suggestionView(message) {
  if (!message.edited_content) return null;
  return h(
    "div",
    { class: "suggestion" },
    h("span", { class: "suggestion-label" }, icon("edit"), "Your better answer"),
    h("div", { class: "suggestion-text" }, message.edited_content),
  );
}

/** Replace an answer's body with an editor for its better answer; save(text|null) stores it. */
export function editSuggestion(article, message, save) {
  const body = article.querySelector(".body");
  const old = [...body.childNodes];
  const area = h("textarea", { class: "edit-area suggestion-area", rows: 6, "aria-label": "A better answer" });
  area.value = message.edited_content || message.content;
  const cancel = () => fill(body, ...old);
  const buttons = h(
    "div",
    { class: "edit-buttons" },
    message.edited_content
      ? h("button", { type: "button", class: "ghost", onclick: () => save(null) }, "Remove")
      : null,
    h("button", { type: "button", class: "ghost", onclick: cancel }, "Cancel"),
    h("button", { type: "button", class: "primary", onclick: () => area.value.trim() && save(area.value) }, "Save better answer"),
  );
  area.addEventListener("keydown", (e) => {
    if (e.key === "Escape") { e.stopPropagation(); cancel(); }
  });
  fill(body, h("p", { class: "muted" }, "Suggest a better answer: it is kept beside the model's own, for training."), area, buttons);
  area.focus();
}
