// The chat settings panel: system prompt, LocalDocs collections (localdocs.js) and sampling
// parameters.
//
// The form is built from GET /api/params, which the server derives from
// GenerationParams (llm4all/params.py): names, types, ranges, help and defaults
// are declared there once. An empty field means "the default", and its placeholder
// shows that default for the chat's model (GET /api/params?model=NAME: the server's
// defaults with the model's catalog sampling, e.g. min_p 0.4 for the default model).

import { api } from "./api.js";
import { fill, h, iconButton } from "./dom.js";
import { LocalDocsField } from "./localdocs.js";

const LABELS = { max_tokens: "Max tokens", top_k: "Top-k", top_p: "Top-p", min_p: "Min-p" };

function label(name) {
  return LABELS[name] || name.charAt(0).toUpperCase() + name.slice(1).replaceAll("_", " ");
}

function placeholder(spec) {
  return spec.default === null ? "default" : String(spec.default);
}

function shown(value) {
  if (value === null || value === undefined) return "";
  return Array.isArray(value) ? value.join("\n") : String(value);
}

export class SettingsPanel {
  /** actions: save({system_prompt, params, asDefault}), close() */
  constructor(root, actions) {
    this.root = root;
    this.actions = actions;
    this.specs = [];
    this.inputs = new Map();
    this.docs = null;
  }

  setSpecs(specs) {
    this.specs = specs;
  }

  field(spec) {
    const id = `param-${spec.name}`;
    let input;
    if (spec.type === "int" || spec.type === "float") {
      input = h("input", {
        id,
        type: "number",
        step: spec.type === "int" ? 1 : "any",
        min: spec.min ?? null,
        max: spec.max ?? null,
        placeholder: placeholder(spec),
      });
    } else {
      input = h("textarea", {
        id,
        rows: spec.type === "list" ? 2 : 3,
        class: "mono",
        placeholder: spec.type === "list" ? "one per line" : "none",
      });
    }
    input.dataset.param = spec.name;
    this.inputs.set(spec.name, input);
    return h("div", { class: "field" }, h("label", { for: id }, label(spec.name)), input, h("small", {}, spec.help));
  }

  /**
   * Show the panel for a chat (null: the chat that the next message starts); collections
   * and folders (whether the page may add one) come from /api/collections.
   */
  show(chat, uiSettings, collections = [], folders = null) {
    this.chatId = chat?.id ?? null;
    this.docs = new LocalDocsField(collections, chat?.collections || [], folders);
    this.inputs.clear();
    const numeric = this.specs.filter((s) => s.type === "int" || s.type === "float");
    const other = this.specs.filter((s) => s.type === "text" || s.type === "list");
    const system = h("textarea", { id: "system-prompt", rows: 5, placeholder: "The model's default system prompt" });
    system.value = chat ? chat.system_prompt ?? "" : uiSettings.default_system_prompt ?? "";
    const asDefault = h("input", { type: "checkbox", id: "system-default" });
    const form = h(
      "form",
      {
        class: "settings-form",
        onsubmit: (e) => {
          e.preventDefault();
          this.actions.save({
            system_prompt: system.value.trim() ? system.value : null,
            params: this.values(),
            collections: this.docs.selected(),
            asDefault: asDefault.checked,
          });
        },
      },
      h(
        "div",
        { class: "field" },
        h("label", { for: "system-prompt" }, "System prompt"),
        system,
        h("label", { class: "check" }, asDefault, "Use this system prompt for new chats"),
      ),
      h("h3", {}, "LocalDocs"),
      this.docs.element(),
      h("h3", {}, "Sampling"),
      h("div", { class: "grid" }, numeric.map((s) => this.field(s))),
      h("details", { class: "advanced" }, h("summary", {}, "Stop strings and grammar"), other.map((s) => this.field(s))),
      h(
        "div",
        { class: "panel-buttons" },
        h("button", { type: "button", class: "ghost", onclick: () => this.clear() }, "Reset to defaults"),
        h("button", { type: "submit", class: "primary", id: "save-settings" }, "Save"),
      ),
    );
    for (const [name, value] of Object.entries(chat?.params || {})) {
      const input = this.inputs.get(name);
      if (input) input.value = shown(value);
    }
    fill(
      this.root,
      h(
        "header",
        { class: "panel-head" },
        h("h2", {}, "Chat settings"),
        iconButton("x", "Close", () => this.actions.close()),
      ),
      form,
    );
    this.root.hidden = false;
    this.showDefaults(chat?.model ?? uiSettings?.default_model ?? null);
  }

  /** Placeholders with the defaults of model `name` (null: the server's default model). */
  async showDefaults(name) {
    const asked = (this.asked = (this.asked ?? 0) + 1);
    let specs;
    try {
      specs = await api.get(name ? `/params?model=${encodeURIComponent(name)}` : "/params");
    } catch {
      return; // the generic defaults stay shown
    }
    if (asked !== this.asked) return; // the panel was shown again meanwhile
    for (const spec of specs) {
      const input = this.inputs.get(spec.name);
      if (input && (spec.type === "int" || spec.type === "float")) input.placeholder = placeholder(spec);
    }
    this.root.dataset.defaultsFor = name ?? "";
  }

  hide() {
    this.root.hidden = true;
  }

  clear() {
    for (const input of this.inputs.values()) input.value = "";
  }

  /** The parameters the user set (empty fields are left to the defaults). */
  values() {
    const out = {};
    for (const spec of this.specs) {
      const raw = this.inputs.get(spec.name)?.value ?? "";
      if (!raw.trim()) continue;
      if (spec.type === "int") out[spec.name] = parseInt(raw, 10);
      else if (spec.type === "float") out[spec.name] = parseFloat(raw);
      else if (spec.type === "list") out[spec.name] = raw.split("\n").filter((line) => line.length);
      else out[spec.name] = raw;
    }
    return out;
  }
}
