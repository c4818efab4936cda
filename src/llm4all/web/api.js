// The page's only way to the server: the JSON API under /api/ (see docs/web-ui.md).

import { askForKey, authHeaders } from "./auth.js";

export class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = null;
  try {
    const body = await response.json();
    message = body.error?.message || message;
    code = body.error?.code || null;
  } catch { /* not JSON */ }
  return new ApiError(message, response.status, code);
}

/**
 * fetch() under /api/ with the API key; a 401 asks the user for the key and sends again.
 * Returns the response, or throws an ApiError for any other failure.
 */
async function send(path, init) {
  for (;;) {
    const auth = authHeaders();
    const response = await fetch(`/api${path}`, { ...init, headers: { ...init.headers, ...auth } });
    if (response.ok) return response;
    const error = await errorOf(response);
    if (response.status !== 401 || !(await askForKey(Boolean(auth.Authorization)))) throw error;
  }
}

async function call(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await send(path, init);
  return response.status === 204 ? null : response.json();
}

export const api = {
  get: (path) => call("GET", path),
  post: (path, body) => call("POST", path, body ?? {}),
  patch: (path, body) => call("PATCH", path, body),
  put: (path, body) => call("PUT", path, body),
  del: (path) => call("DELETE", path),
};

/**
 * POST and read the answer as server-sent events: onEvent({type, …}) for each.
 * Resolves when the stream ends; rejects on an HTTP error or a network failure.
 */
export async function stream(path, body, onEvent, signal) {
  const response = await send(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify(body),
    signal,
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data) onEvent(JSON.parse(data));
    }
  }
}
