// The API key of a server started with --api-key: kept in localStorage, asked for on a 401.
//
// The page and its assets are public (they hold no data); every /api/ call carries
// `Authorization: Bearer KEY` once the user has given a key. When the API refuses
// one, a small dialog asks for it; every call that was refused meanwhile waits for
// the same answer and is then sent again.

import { fill, h, icon } from "./dom.js";

const STORAGE = "llm4all-api-key";
let asking = null; // the promise of the open dialog, shared by every refused call
let memory = ""; // the key, when localStorage is off

export function savedKey() {
  try { return localStorage.getItem(STORAGE) || ""; } catch { return ""; }
}

function saveKey(key) {
  try { localStorage.setItem(STORAGE, key); } catch { /* storage off: kept for this page only */ }
  memory = key;
}

/** Headers that carry the key, when there is one. */
export function authHeaders() {
  const key = savedKey() || memory;
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/**
 * Ask the user for the key; resolves true once one is saved, false when they close the dialog.
 * `refused` says whether a key was sent and refused (then the dialog says so).
 */
export function askForKey(refused) {
  asking ??= showDialog(refused).finally(() => { asking = null; });
  return asking;
}

function showDialog(refused) {
  const dialog = document.getElementById("key-dialog");
  const input = h("input", {
    id: "api-key", type: "password", autocomplete: "current-password", required: true,
    placeholder: "API key", "aria-label": "API key",
  });
  const form = h(
    "form",
    { method: "dialog", class: "key-form" },
    h("h2", {}, icon("key"), "This server needs its API key"),
    h(
      "p",
      { class: "muted" },
      "It was started with ", h("code", {}, "--api-key"),
      ". The key is kept in this browser and sent with each request.",
    ),
    refused ? h("p", { class: "error-text", role: "alert" }, "The server refused that key.") : null,
    input,
    h("div", { class: "panel-buttons" }, h("button", { type: "submit", class: "primary", id: "save-key" }, "Unlock")),
  );
  fill(dialog, form);
  return new Promise((resolve) => {
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      saveKey(key);
      dialog.close("saved");
    });
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "saved"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    input.focus();
  });
}
