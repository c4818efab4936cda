// MCP tools in the chat: the calls an answer makes (with Allow / Deny for `confirm` tools)
// and the dialog that lists the servers' tools and turns them on or off for a chat.
//
// A tool's arguments and result come from the model and from the tool: untrusted text,
// shown with textContent only (see dom.js).

import { api } from "./api.js";
import { fill, h, icon } from "./dom.js";

const PERMISSIONS = {
  allow: "runs without asking",
  confirm: "asks you first",
  deny: "never offered",
};

function argumentsText(args) {
  const parts = Object.entries(args || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  return `(${parts.join(", ")})`;
}

function statusText(call) {
  if (call.status === "asking") return "waiting for you";
  if (call.status === "running") return "running…";
  return call.ran ? "done" : "not run";
}

/**
 * One tool call as a card: what was called, its state, Allow / Deny while it waits
 * (answer(allow) is called with the user's choice), and its result, collapsible.
 */
export function toolCallView(call, answer = null) {
  const head = h(
    "div",
    { class: "tool-head" },
    icon("tool"),
    h("span", { class: "tool-name" }, call.server && call.server !== "?" ? `${call.server} · ${call.name}` : call.name),
    h("code", { class: "tool-args" }, argumentsText(call.arguments)),
    h("span", { class: `tool-status ${call.status}${call.ran ? " ran" : ""}` }, statusText(call)),
  );
  const card = h(
    "div",
    { class: "tool-call", dataset: { callId: call.id || "", status: call.status, permission: call.permission } },
    head,
  );
  if (call.status === "asking" && answer) {
    const buttons = h(
      "div",
      { class: "tool-consent" },
      h("span", {}, "Run this tool?"),
      h("button", { type: "button", class: "primary allow", onclick: () => decide(true) }, "Allow"),
      h("button", { type: "button", class: "ghost deny", onclick: () => decide(false) }, "Deny"),
    );
    const decide = (allow) => {
      for (const b of buttons.querySelectorAll("button")) b.disabled = true;
      answer(allow);
    };
    card.append(buttons);
  }
  if (call.status === "done" && call.result !== null && call.result !== undefined) {
    card.append(
      h(
        "details",
        { class: "tool-result" },
        h("summary", {}, call.ran ? "Result" : "Why it did not run"),
        h("pre", {}, call.result),
      ),
    );
  }
  return card;
}

/** A stored tool message (role "tool") as it shows in the conversation. */
export function toolMessageView(message) {
  const call = message.call || { name: "tool", arguments: {}, status: "done", ran: false, result: message.content };
  return h(
    "article",
    { class: "msg tool", dataset: { id: message.id, role: "tool" } },
    h("div", { class: "body" }, toolCallView({ ...call, status: "done" })),
  );
}

/** The Tools button and dialog: the servers' tools, their permissions, and this chat's switch. */
export class ToolsDialog {
  /** actions: chat() the open chat (or null), setOn(on) when the switch changes */
  constructor(button, dialog, actions) {
    this.button = button;
    this.dialog = dialog;
    this.actions = actions;
    this.data = { servers: [], error: null };
    this.on = true;
    button.addEventListener("click", () => this.open());
  }

  get available() {
    return this.data.servers.some((s) => s.tools.some((t) => t.permission !== "deny"));
  }

  /** Ask the server for the tools (it starts the MCP servers on the first ask). */
  async refresh() {
    this.data = await api.get("/tools");
    this.button.hidden = !this.data.servers.length && !this.data.error;
    this.show(this.on);
  }

  /** Show whether the open chat offers the tools. */
  show(on) {
    this.on = on;
    this.button.classList.toggle("active", on && this.available);
    this.button.setAttribute("aria-pressed", String(on && this.available));
    this.button.title = on && this.available ? "Tools are offered in this chat" : "Tools are off in this chat";
  }

  open() {
    const toggle = h("input", { type: "checkbox", id: "tools-on" });
    toggle.checked = this.on;
    toggle.disabled = !this.available;
    toggle.addEventListener("change", () => this.actions.setOn(toggle.checked));
    const problems = [this.data.error, ...this.data.servers.map((s) => s.error)].filter(Boolean);
    fill(
      this.dialog,
      h("h2", {}, icon("tool"), "Tools"),
      h("p", { class: "muted" }, "Tools of the MCP servers in mcp.toml. The model may call them; you see every call."),
      h("label", { class: "check" }, toggle, "Offer these tools in this chat"),
      problems.map((line) => h("p", { class: "tool-error" }, line)),
      this.data.servers.map((server) =>
        h(
          "section",
          { class: "tool-server" },
          h("h3", {}, server.name),
          h(
            "ul",
            { class: "tool-list" },
            server.tools.map((t) =>
              h(
                "li",
                {},
                h("span", { class: "tool-name" }, t.name),
                h("span", { class: `tag permission ${t.permission}`, title: PERMISSIONS[t.permission] }, t.permission),
                t.description ? h("span", { class: "description" }, t.description) : null,
              ),
            ),
          ),
        ),
      ),
      h(
        "div",
        { class: "panel-buttons" },
        h("button", { type: "button", class: "primary", onclick: () => this.dialog.close() }, "Close"),
      ),
    );
    this.dialog.showModal();
  }
}
