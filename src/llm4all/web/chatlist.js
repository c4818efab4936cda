// The side list of chats: grouped by day, opened on click, renamed and deleted in place.

import { fill, h, icon, iconButton, timeAgo } from "./dom.js";

const DAY = 24 * 3600 * 1000;

function groupOf(iso) {
  const today = new Date();
  today.setHours(0, 0, 0, 0);
  const t = new Date(iso).getTime();
  if (t >= today.getTime()) return "Today";
  if (t >= today.getTime() - DAY) return "Yesterday";
  if (t >= today.getTime() - 7 * DAY) return "Previous 7 days";
  return "Older";
}

export class ChatList {
  /** actions: open(id), rename(id, title), remove(id) */
  constructor(root, actions) {
    this.root = root;
    this.actions = actions;
  }

  render(chats, currentId, query) {
    if (!chats.length) {
      fill(this.root, h("p", { class: "empty-list" }, query ? "No chat matches." : "No chats yet."));
      return;
    }
    const out = [];
    let group = null;
    for (const chat of chats) {
      const g = groupOf(chat.updated_at);
      if (g !== group) {
        out.push(h("h2", { class: "group" }, g));
        group = g;
      }
      out.push(this.item(chat, chat.id === currentId));
    }
    fill(this.root, ...out);
  }

  item(chat, current) {
    const title = h("span", { class: "title" }, chat.title || "Untitled chat");
    const sub = h("span", { class: "sub" }, [chat.model, timeAgo(chat.updated_at)].filter(Boolean).join(" · "));
    const item = h(
      "div",
      {
        class: `chat-item${current ? " current" : ""}${chat.generating ? " generating" : ""}`,
        role: "button",
        tabindex: 0,
        "aria-current": current ? "page" : null,
        dataset: { id: chat.id },
        onclick: () => this.actions.open(chat.id),
        onkeydown: (e) => { if (e.key === "Enter" && e.target === item) this.actions.open(chat.id); },
      },
      icon("chat"),
      h("span", { class: "labels" }, title, sub),
    );
    const rename = iconButton("edit", "Rename", (e) => { e.stopPropagation(); this.rename(item, title, chat); });
    const remove = iconButton("trash", "Delete", (e) => { e.stopPropagation(); this.confirmDelete(remove, chat); });
    item.append(h("span", { class: "item-actions" }, rename, remove));
    return item;
  }

  rename(item, title, chat) {
    const input = h("input", { class: "rename", "aria-label": "Chat title", maxlength: 500 });
    input.value = chat.title || "";
    let done = false;
    const finish = (save) => {
      if (done) return;
      done = true;
      const value = input.value.trim();
      input.replaceWith(title);
      if (save && value && value !== chat.title) this.actions.rename(chat.id, value);
    };
    input.addEventListener("click", (e) => e.stopPropagation());
    input.addEventListener("keydown", (e) => {
      e.stopPropagation();
      if (e.key === "Enter") finish(true);
      if (e.key === "Escape") finish(false);
    });
    input.addEventListener("blur", () => finish(true));
    title.replaceWith(input);
    input.focus();
    input.select();
  }

  confirmDelete(button, chat) {
    if (button.classList.contains("confirm")) {
      this.actions.remove(chat.id);
      return;
    }
    const label = (text) => {
      button.title = text;
      button.setAttribute("aria-label", text);
    };
    button.classList.add("confirm");
    label("Click again to delete");
    fill(button, icon("trash"), "Delete?");
    setTimeout(() => {
      button.classList.remove("confirm");
      label("Delete");
      fill(button, icon("trash"));
    }, 3000);
  }
}
