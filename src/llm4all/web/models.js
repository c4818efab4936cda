// Models: the picker in the top bar and the dialog that lists, describes and pulls them.

import { api } from "./api.js";
import { fill, formatBytes, h, icon, iconButton, toast } from "./dom.js";

const POLL_MS = 500;

function facts(model) {
  const out = [];
  if (model.size) out.push(["Size", formatBytes(model.size)]);
  if (model.ram_required_gb) out.push(["RAM", `${model.ram_required_gb} GB`]);
  if (model.context_length) out.push(["Context", `${model.context_length.toLocaleString()} tokens`]);
  out.push(["Licence", model.license || "unknown"]);
  return h(
    "dl",
    { class: "facts" },
    out.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))),
  );
}

function tags(model) {
  const list = [model.parameters, model.quantization, model.kind !== "chat" ? model.kind : null];
  if (model.loaded) list.push("loaded");
  if (model.default) list.push("recommended");
  return h("span", { class: "tags" }, list.filter(Boolean).map((t) => h("span", { class: "tag" }, t)));
}

export class Models {
  /** actions: pick(name) when the user chooses a model */
  constructor(select, dialog, actions) {
    this.select = select;
    this.dialog = dialog;
    this.actions = actions;
    this.data = { installed: [], catalog: [], pulls: [], default: null };
    this.current = null;
    this.bars = new Map();
    this.polling = false;
    select.addEventListener("change", () => {
      if (select.value) this.actions.pick(select.value);
    });
  }

  get chatModels() {
    return this.data.installed.filter((m) => m.kind !== "embedding");
  }

  async refresh() {
    this.data = await api.get("/models");
    this.renderPicker();
    if (this.dialog.open) this.renderDialog();
    if (this.data.pulls.some((p) => p.status === "running")) this.poll();
  }

  /** Show which model a chat uses (null: the default one). */
  show(name) {
    this.current = name;
    this.renderPicker();
  }

  renderPicker() {
    const wanted = this.current || this.data.default;
    const options = this.chatModels.map((m) => h("option", { value: m.name }, m.name));
    if (!this.chatModels.length) {
      options.push(h("option", { value: "", disabled: true }, "No model installed"));
    }
    if (wanted && !this.chatModels.some((m) => m.name === wanted)) {
      options.unshift(h("option", { value: wanted, disabled: true }, `${wanted} (not installed)`));
    }
    fill(this.select, ...options);
    this.select.value = wanted || "";
  }

  open() {
    this.renderDialog();
    this.dialog.showModal();
    this.refresh().catch((e) => toast(e.message, "error"));
  }

  card(model) {
    let action;
    if (model.installed && model.kind === "embedding") {
      action = h("span", { class: "muted" }, "for LocalDocs");
    } else if (model.installed && model.name === (this.current || this.data.default)) {
      action = h("span", { class: "in-use" }, icon("check"), "In use");
    } else if (model.installed) {
      const use = () => { this.actions.pick(model.name); this.dialog.close(); };
      action = h("button", { type: "button", class: "ghost", onclick: use }, "Use");
    } else {
      action = h("button", { type: "button", class: "primary", onclick: () => this.pull(model.name) }, icon("download"), "Download");
    }
    const bar = h("progress", { max: 1, value: 0 });
    const status = h("span", { class: "pull-status" });
    const cancel = h("button", { type: "button", class: "ghost cancel-pull", onclick: () => this.cancel(model.name) }, "Cancel");
    const progress = h("div", { class: "pull", hidden: true }, bar, status, cancel);
    this.bars.set(model.name, { progress, bar, status, cancel, action });
    return h(
      "li",
      { class: "model-card", dataset: { model: model.name } },
      h("div", { class: "model-head" }, h("strong", {}, model.name), tags(model), h("span", { class: "spacer" }), action),
      model.description ? h("p", { class: "description" }, model.description) : null,
      facts(model),
      progress,
    );
  }

  renderDialog() {
    this.bars.clear();
    const { installed, catalog } = this.data;
    fill(
      this.dialog,
      h(
        "header",
        { class: "panel-head" },
        h("h2", {}, icon("chip"), "Models"),
        iconButton("x", "Close", () => this.dialog.close()),
      ),
      h("p", { class: "muted" }, "Models run on this computer. Downloads come from the sources in llm4all's catalog."),
      h("h3", {}, `Installed (${installed.length})`),
      installed.length
        ? h("ul", { class: "model-list" }, installed.map((m) => this.card(m)))
        : h("p", { class: "muted" }, "None yet: download one below."),
      h("h3", {}, "Available to download"),
      h("ul", { class: "model-list" }, catalog.map((m) => this.card(m))),
    );
    this.showPulls();
  }

  showPulls() {
    for (const pull of this.data.pulls) {
      const view = this.bars.get(pull.name);
      if (!view || pull.status === "done") continue;
      const running = pull.status === "running";
      view.progress.hidden = false;
      view.progress.dataset.status = pull.status;
      view.progress.classList.toggle("cancelled", pull.status === "cancelled");
      view.action.disabled = running;
      view.cancel.hidden = !running;
      view.cancel.disabled = pull.phase === "cancelling";
      if (pull.status === "error") {
        view.bar.hidden = true;
        fill(view.status, h("span", { class: "error-text" }, pull.error));
        continue;
      }
      view.bar.max = pull.total || 1;
      view.bar.value = pull.total ? pull.completed : 0;
      const pct = pull.total ? ` · ${Math.floor((100 * pull.completed) / pull.total)}%` : "";
      const amount = `${formatBytes(pull.completed)} of ${formatBytes(pull.total)}${pct}`;
      if (pull.status === "cancelled") {
        fill(view.status, h("strong", {}, "Cancelled"), ` at ${amount}. What was downloaded is kept: Resume goes on from there.`);
        if (view.action.tagName === "BUTTON") fill(view.action, icon("download"), "Resume");
      } else {
        fill(view.status, `${pull.phase}: ${amount}`);
      }
    }
  }

  /** Show one pull as the server just reported it. */
  showPull(job) {
    this.data.pulls = [...this.data.pulls.filter((p) => p.name !== job.name), job];
    this.showPulls();
  }

  async cancel(name) {
    try {
      const job = await api.post(`/models/pulls/${encodeURIComponent(name)}/cancel`);
      this.showPull(job);
      if (job.status === "cancelled") toast(`${name}: download cancelled`);
    } catch (e) {
      toast(e.message, "error");
    }
  }

  async pull(name) {
    try {
      const job = await api.post("/models/pull", { name });
      this.showPull(job);
      this.poll();
    } catch (e) {
      toast(e.message, "error");
    }
  }

  async poll() {
    if (this.polling) return;
    this.polling = true;
    try {
      for (;;) {
        await new Promise((r) => setTimeout(r, POLL_MS));
        const before = new Map(this.data.pulls.map((p) => [p.name, p.status]));
        this.data.pulls = await api.get("/models/pulls");
        this.showPulls();
        for (const p of this.data.pulls) {
          if (before.get(p.name) === "running" && p.status === "done") toast(`${p.name} is ready`);
          if (before.get(p.name) === "running" && p.status === "error") toast(`${p.name}: ${p.error}`, "error");
          if (before.get(p.name) === "running" && p.status === "cancelled") toast(`${p.name}: download cancelled`);
        }
        if (!this.data.pulls.some((p) => p.status === "running")) break;
      }
    } finally {
      this.polling = false;
    }
    await this.refresh();
  }
}
