// The LocalDocs part of the settings panel: the collections a chat searches, and adding a
// folder to a collection (where the server allows it: GET /api/collections/folders).
//
// A folder is indexed on the server in the background; the list polls
// GET /api/collections until no collection is being indexed.

import { api } from "./api.js";
import { h, fill } from "./dom.js";

const POLL_MS = 1000;

function status(c) {
  const run = c.indexing;
  if (run?.state === "running") return `indexing… ${run.files} files · ${run.chunks} excerpts`;
  if (run?.state === "failed") return `indexing failed: ${run.error}`;
  return `${c.files} files · ${c.chunks} excerpts`;
}

export class LocalDocsField {
  /** collections: from GET /api/collections; chosen: the chat's; folders: the add policy. */
  constructor(collections, chosen, folders) {
    this.collections = collections;
    this.chosen = new Set(chosen);
    this.folders = folders;
    this.list = h("div", { class: "collections" });
    this.timer = null;
    this.renderList();
  }

  /** The names ticked now. */
  selected() {
    return [...this.list.querySelectorAll("input[data-collection]")].filter((b) => b.checked).map((b) => b.value);
  }

  renderList() {
    this.chosen = new Set(this.list.childElementCount ? this.selected() : this.chosen);
    const rows = this.collections.map((c) => {
      const box = h("input", { type: "checkbox", value: c.name, dataset: { collection: c.name } });
      box.checked = this.chosen.has(c.name);
      return h(
        "label",
        { class: "check collection", dataset: { state: c.indexing?.state ?? "idle" } },
        box,
        h("span", {}, c.name),
        h("small", {}, status(c)),
      );
    });
    const none = this.folders?.can_add
      ? "No collections yet. Add a folder below."
      : "No collections yet. Add one with: llm4all docs add NAME FOLDER";
    fill(this.list, rows.length ? rows : h("small", {}, none));
    if (this.collections.some((c) => c.indexing?.state === "running")) this.poll();
  }

  poll() {
    if (this.timer !== null) return;
    this.timer = setTimeout(async () => {
      this.timer = null;
      if (!this.list.isConnected) return; // the panel was closed or redrawn
      try {
        this.collections = await api.get("/collections");
        this.renderList();
      } catch (e) {
        this.message(e.message, true);
      }
    }, POLL_MS);
  }

  message(text, error = false) {
    fill(this.note, text);
    this.note.classList.toggle("error", error);
  }

  addForm() {
    this.note = h("small", { id: "add-folder-note", role: "status" });
    if (!this.folders?.can_add) {
      if (this.folders?.message) this.message(this.folders.message);
      return this.note;
    }
    const roots = this.folders.roots || [];
    const name = h("input", { id: "add-folder-name", placeholder: "Collection name", maxlength: 100 });
    const folder = h("input", {
      id: "add-folder-path",
      class: "mono",
      placeholder: roots.length ? `A folder under ${roots.join(" or ")}` : "A folder on this machine, e.g. ~/Notes",
    });
    const add = h("button", { type: "button", class: "ghost", id: "add-folder" }, "Add folder");
    add.addEventListener("click", async () => {
      if (!name.value.trim() || !folder.value.trim()) {
        this.message("Give a collection name and a folder.", true);
        return;
      }
      add.disabled = true;
      try {
        const added = await api.post("/collections", { name: name.value.trim(), folder: folder.value.trim() });
        this.chosen = new Set([...this.selected(), added.name]);
        this.collections = [...this.collections.filter((c) => c.name !== added.name), added].sort((a, b) =>
          a.name.localeCompare(b.name),
        );
        this.list.replaceChildren();
        this.renderList();
        this.message(`Indexing ${added.name}; you can chat meanwhile. Save to search it in this chat.`);
        folder.value = "";
      } catch (e) {
        this.message(e.message, true);
      } finally {
        add.disabled = false;
      }
    });
    const hint = roots.length ? `Folders under ${roots.join(", ")} only.` : "";
    return h(
      "div",
      { class: "add-folder" },
      h("label", { for: "add-folder-path" }, "Add a folder"),
      h("div", { class: "add-folder-row" }, name, folder, add),
      hint ? h("small", {}, hint) : null,
      this.note,
    );
  }

  /** The whole field: the list, then the add form (or why folders cannot be added). */
  element() {
    return h("div", { class: "field" }, this.list, this.addForm());
  }
}
