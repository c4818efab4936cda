// The chat page: state, wiring and keyboard. Rendering lives in the other modules.
//
// State is small on purpose: the chat list, the open chat (as the server last
// sent it) and the answer being streamed, if any. After each answer the open chat
// is fetched again, so what the page shows is what the store holds.

import { api, stream } from "./api.js";
import { ChatList } from "./chatlist.js";
import { fill, h, icon, toast } from "./dom.js";
import { messageView, renderMessages, StreamingAnswer } from "./messages.js";
import { Models } from "./models.js";
import { SettingsPanel } from "./settings.js";
import { editSuggestion, ShareDialog } from "./share.js";
import { ToolsDialog } from "./tools.js";

const $ = (id) => document.getElementById(id);
const el = {
  messages: $("messages"),
  scroller: $("scroller"),
  input: $("input"),
  send: $("send"),
  stop: $("stop"),
  title: $("chat-title"),
  search: $("search"),
  theme: $("theme-toggle"),
  docs: $("docs-badge"),
};
const SUGGESTIONS = [
  "Explain what a context window is, in two sentences.",
  "Write a Python function that checks whether a word is a palindrome.",
  "Give me three ideas for a rainy Sunday.",
];

const state = { chats: [], chat: null, query: "", ui: {}, answering: null, toolsOn: true };

const chatList = new ChatList($("chat-list"), {
  open: (id) => { location.hash = `#/chat/${id}`; closeSidebar(); },
  rename: (id, title) => guard(renameChat(id, title)),
  remove: (id) => guard(deleteChat(id)),
});
const models = new Models($("model-select"), $("models-dialog"), { pick: (name) => guard(pickModel(name)) });
const settings = new SettingsPanel($("settings-panel"), {
  save: (values) => guard(saveSettings(values)),
  close: () => settings.hide(),
});
const actions = {
  regenerate: (message) => guard(regenerate(message)),
  edit: (message, text) => guard(editMessage(message, text)),
  rate: (message, rating) => guard(rate(message, rating)),
  suggest: (message, article) => editSuggestion(article, message, (text) => guard(suggest(message, text))),
};
const tools = new ToolsDialog($("open-tools"), $("tools-dialog"), { setOn: (on) => guard(setTools(on)) });
const sharing = new ShareDialog($("share-dialog"), { chat: () => state.chat });

/** Run a promise, turning a failure into a toast. */
async function guard(promise) {
  try {
    return await promise;
  } catch (e) {
    toast(e.message, "error");
    return undefined;
  }
}

// -- chats ------------------------------------------------------------------------------------
async function loadChats() {
  const q = state.query ? `?q=${encodeURIComponent(state.query)}` : "";
  state.chats = await api.get(`/chats${q}`);
  chatList.render(state.chats, state.chat?.id, state.query);
}

function chatIdFromHash() {
  const match = /^#\/chat\/([0-9a-f]+)$/.exec(location.hash);
  return match ? match[1] : null;
}

async function openChat(id) {
  if (id && id === state.chat?.id) return;
  state.chat = null;
  if (id) {
    try {
      state.chat = await api.get(`/chats/${id}`);
    } catch (e) {
      toast(e.message, "error");
      history.replaceState(null, "", location.pathname);
    }
  }
  showChat();
}

function showChat() {
  const chat = state.chat;
  fill(el.title, chat?.title || "New chat");
  document.title = chat?.title ? `${chat.title} · llm4all` : "llm4all";
  document.body.dataset.chat = chat?.id || "";
  models.show(chat?.model || null);
  if (chat?.messages.length) renderMessages(el.messages, chat.messages, actions);
  else showWelcome();
  chatList.render(state.chats, chat?.id, state.query);
  if (!settings.root.hidden && settings.chatId !== (chat?.id ?? null)) guard(openSettings());
  const docs = chat?.collections || [];
  el.docs.hidden = !docs.length;
  fill(el.docs, icon("book"), docs.join(", "));
  el.docs.title = `Answers use LocalDocs: ${docs.join(", ")}`;
  tools.show(chat ? chat.tools !== false : state.toolsOn);
  setBusy();
  scrollToEnd(true);
}

function showWelcome() {
  const noModel = !models.chatModels.length;
  fill(
    el.messages,
    h(
      "div",
      { class: "welcome" },
      h("div", { class: "logo" }, icon("chat")),
      h("h2", {}, "What can I help with?"),
      h("p", { class: "muted" }, "Everything runs on this computer: your chats never leave it."),
      noModel
        ? h("button", { type: "button", class: "primary", onclick: () => models.open() }, icon("download"), "Download a model to start")
        : h(
          "div",
          { class: "suggestions" },
          SUGGESTIONS.map((text) => h("button", { type: "button", class: "suggestion", onclick: () => { el.input.value = text; autosize(); el.input.focus(); } }, text)),
        ),
    ),
  );
}

async function ensureChat() {
  if (state.chat) return state.chat;
  const model = models.select.value || null;
  const chat = await api.post("/chats", { ...(model ? { model } : {}), tools: state.toolsOn });
  state.chat = { ...chat, messages: [] };
  history.replaceState(null, "", `#/chat/${chat.id}`);
  return state.chat;
}

async function renameChat(id, title) {
  const chat = await api.patch(`/chats/${id}`, { title });
  if (state.chat?.id === id) {
    state.chat = { ...state.chat, ...chat };
    fill(el.title, chat.title);
  }
  await loadChats();
}

async function deleteChat(id) {
  await api.del(`/chats/${id}`);
  if (state.chat?.id === id) {
    history.replaceState(null, "", location.pathname);
    state.chat = null;
    showChat();
  }
  await loadChats();
  toast("Chat deleted");
}

// -- answering --------------------------------------------------------------------------------
function removeFrom(messageId) {
  const start = el.messages.querySelector(`[data-id="${CSS.escape(messageId)}"]`);
  let node = start;
  while (node) {
    const next = node.nextElementSibling;
    node.remove();
    node = next;
  }
}

function pendingUser(text) {
  el.messages.querySelector(".welcome")?.remove();
  const view = messageView({ id: "", role: "user", content: text }, actions);
  view.classList.add("pending");
  el.messages.append(view);
  return view;
}

async function send() {
  const text = el.input.value;
  if (!text.trim()) return;
  if (state.answering) {
    toast("Wait for the answer being written, or stop it (Esc)");
    return;
  }
  const chat = await ensureChat();
  el.input.value = "";
  autosize();
  await answer(chat, `/chats/${chat.id}/messages`, { content: text }, pendingUser(text));
}

async function regenerate(message) {
  if (state.answering) return;
  if (message) removeFrom(message.id);
  const chat = state.chat;
  await answer(chat, `/chats/${chat.id}/regenerate`, { message_id: message?.id ?? null });
}

async function editMessage(message, text) {
  if (state.answering) return;
  removeFrom(message.id);
  const chat = state.chat;
  await answer(chat, `/chats/${chat.id}/messages/${message.id}/edit`, { content: text }, pendingUser(text));
}

/** Stream one answer into the page, then show the chat as the store now holds it. */
async function answer(chat, path, body, pending = null) {
  const view = new StreamingAnswer();
  el.messages.append(view.el);
  const controller = new AbortController();
  state.answering = { chatId: chat.id, controller };
  setBusy();
  scrollToEnd(true);
  let failure = null;
  const onEvent = (event) => {
    if (event.type === "user") pending?.classList.remove("pending");
    else if (event.type === "start") view.started(event.model);
    else if (event.type === "delta") view.delta(event.text);
    else if (event.type === "html") view.html(event.html);
    else if (event.type === "reset") view.reset();
    else if (event.type === "tool_call" || event.type === "tool_result") view.toolCall(event.call, (allow) => guard(consent(chat, event.call, allow)));
    else if (event.type === "notice") toast(event.text, "error");
    else if (event.type === "error") failure = event.error.message;
    scrollToEnd();
  };
  try {
    await stream(path, body, onEvent, controller.signal);
  } catch (e) {
    if (e.name !== "AbortError") failure = e.message;
  } finally {
    state.answering = null;
    setBusy();
  }
  if (state.chat?.id === chat.id) {
    state.chat = await api.get(`/chats/${chat.id}`);
    showChat();
    if (failure) {
      const failed = new StreamingAnswer();
      failed.error(failure);
      el.messages.append(failed.el);
      scrollToEnd(true);
    }
  }
  if (failure) toast(failure, "error");
  await loadChats();
}

/** The user's Allow or Deny for a call that waits (the server runs it, or tells the model no). */
async function consent(chat, call, allow) {
  await api.post(`/chats/${chat.id}/tool-calls/${encodeURIComponent(call.id)}`, { allow });
}

/** Turn the MCP tools on or off for the open chat (or for the next new one). */
async function setTools(on) {
  state.toolsOn = on;
  if (state.chat) {
    const chat = await api.patch(`/chats/${state.chat.id}`, { tools: on });
    state.chat = { ...state.chat, ...chat };
  }
  tools.show(on);
  toast(on ? "Tools on in this chat" : "Tools off in this chat");
}

async function stop() {
  const running = state.answering;
  if (!running) return;
  // The server stops the answer and the stream ends with what was said; aborting is the fallback.
  try {
    if ((await api.post(`/chats/${running.chatId}/stop`)).stopped) return;
  } catch { /* fall through */ }
  running.controller.abort();
}

function setBusy() {
  const busy = Boolean(state.answering) && state.answering.chatId === state.chat?.id;
  el.send.hidden = busy;
  el.stop.hidden = !busy;
  document.body.classList.toggle("answering", Boolean(state.answering));
}

async function rate(message, rating) {
  replaceMessage(await api.put(`/chats/${message.chat_id}/messages/${message.id}/rating`, { rating }));
}

async function suggest(message, content) {
  replaceMessage(await api.put(`/chats/${message.chat_id}/messages/${message.id}/suggestion`, { content }));
  toast(content === null ? "Suggestion removed" : "Better answer kept");
}

/** Show an answer as the server now has it. */
function replaceMessage(updated) {
  const index = state.chat.messages.findIndex((m) => m.id === updated.id);
  state.chat.messages[index] = updated;
  const last = index === state.chat.messages.length - 1;
  el.messages.querySelector(`[data-id="${CSS.escape(updated.id)}"]`)?.replaceWith(messageView(updated, actions, last));
}

// -- models and settings ----------------------------------------------------------------------
async function pickModel(name) {
  if (state.chat) {
    const chat = await api.patch(`/chats/${state.chat.id}`, { model: name });
    state.chat = { ...state.chat, ...chat };
    await loadChats();
  }
  state.ui = await api.put("/settings", { ...state.ui, default_model: name });
  models.show(name);
  toast(`Chatting with ${name}`);
  if (!settings.root.hidden) await openSettings(); // the placeholders follow the new model's defaults
}

async function openSettings() {
  let collections = [];
  let folders = null;
  try {
    [collections, folders] = await Promise.all([api.get("/collections"), api.get("/collections/folders")]);
  } catch (e) {
    toast(`LocalDocs: ${e.message}`, "error");
  }
  settings.show(state.chat, state.ui, collections, folders);
}

async function saveSettings({ system_prompt, params, collections, asDefault }) {
  const chat = await ensureChat();
  const saved = await api.patch(`/chats/${chat.id}`, { system_prompt, params, collections });
  state.chat = { ...state.chat, ...saved };
  showChat();
  if (asDefault) state.ui = await api.put("/settings", { ...state.ui, default_system_prompt: system_prompt });
  toast("Settings saved");
  await loadChats();
}

// -- the page -----------------------------------------------------------------------------------
function scrollToEnd(force = false) {
  const s = el.scroller;
  const near = s.scrollHeight - s.scrollTop - s.clientHeight < 120;
  if (force || near) s.scrollTop = s.scrollHeight;
}

function autosize() {
  el.input.style.height = "auto";
  el.input.style.height = `${Math.min(el.input.scrollHeight, 240)}px`;
}

function showTheme(theme) {
  document.documentElement.dataset.theme = theme;
  fill(el.theme, icon(theme === "dark" ? "sun" : "moon"));
  el.theme.title = theme === "dark" ? "Light theme" : "Dark theme";
  el.theme.setAttribute("aria-label", el.theme.title);
}

function setTheme(theme) {
  showTheme(theme);
  try { localStorage.setItem("llm4all-theme", theme); } catch { /* storage off */ }
}

function closeSidebar() {
  document.body.classList.remove("sidebar-open");
}

function bind() {
  $("composer").addEventListener("submit", (e) => { e.preventDefault(); guard(send()); });
  el.input.addEventListener("input", autosize);
  el.input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      guard(send());
    }
  });
  el.stop.addEventListener("click", () => guard(stop()));
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape" || document.querySelector("dialog[open]")) return;
    if (state.answering) { e.preventDefault(); guard(stop()); } else if (!settings.root.hidden) settings.hide();
  });
  $("new-chat").addEventListener("click", () => {
    history.pushState(null, "", location.pathname);
    openChat(null);
    closeSidebar();
    el.input.focus();
  });
  let timer = null;
  el.search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { state.query = el.search.value.trim(); guard(loadChats()); }, 200);
  });
  $("open-models").addEventListener("click", () => models.open());
  $("open-sharing").addEventListener("click", () => guard(sharing.openSettings()));
  $("share-chat").addEventListener("click", () => guard(sharing.openChat()));
  $("open-settings").addEventListener("click", () => {
    if (settings.root.hidden) guard(openSettings());
    else settings.hide();
  });
  $("toggle-sidebar").addEventListener("click", () => document.body.classList.toggle("sidebar-open"));
  el.theme.addEventListener("click", () => setTheme(document.documentElement.dataset.theme === "dark" ? "light" : "dark"));
  window.addEventListener("hashchange", () => guard(openChat(chatIdFromHash())));
  window.addEventListener("focus", () => guard(loadChats())); // chats the terminal added meanwhile
}

function decorate() {
  $("new-chat").prepend(icon("plus"));
  $("open-models").prepend(icon("chip"));
  $("open-sharing").prepend(icon("share"));
  $("share-chat").prepend(icon("share"));
  $("open-settings").prepend(icon("sliders"));
  $("open-tools").prepend(icon("tool"));
  fill($("toggle-sidebar"), icon("menu"));
  fill(el.send, icon("send"));
  fill(el.stop, icon("stop"));
}

async function init() {
  decorate();
  bind();
  showTheme(document.documentElement.dataset.theme || "light");
  const [specs, ui] = await Promise.all([api.get("/params"), api.get("/settings")]);
  settings.setSpecs(specs);
  state.ui = ui;
  await Promise.all([models.refresh(), loadChats()]);
  await openChat(chatIdFromHash());
  el.input.focus();
  document.body.dataset.ready = "true";
  // The MCP servers start on this first ask (it may take seconds): not before the page is ready.
  await guard(tools.refresh());
}

guard(init());
