// Parley's public API as the page calls it: JSON requests, Server-Sent Events read from a
// fetch (EventSource can neither POST nor send a bearer token), and errors a person can read.

/** A failed call: the HTTP status (0 when the network failed) and the envelope's fields. */
export class ApiError extends Error {
  constructor(status, code, message, { retryAfter = null, requestId = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    this.requestId = requestId;
  }

  get network() {
    return this.status === 0;
  }
}

/** What to tell a person about `error` (an ApiError or an `error` event's data). */
export function describe(error) {
  const code = error.code ?? "";
  const wait = error.retryAfter ?? (error.retryable ? 1 : null);
  if (error.status === 0) return "Parley cannot be reached. Check your connection.";
  if (error.status === 401) return "Your sign-in has expired or is not valid. Sign in again.";
  if (error.status === 429 || code === "rate_limited" || code.endsWith("quota_exceeded")) {
    const when = wait ? ` Try again in ${wait} s.` : " Try again shortly.";
    return `You have reached a limit: ${error.message}.${when}`.replace("..", ".");
  }
  if (error.status === 503) {
    return `Parley is busy or partly down right now. Try again in ${wait ?? 1} s.`;
  }
  if (code === "cancelled") return "Stopped. The answer so far is kept.";
  if (code === "interrupted") return "The answer was interrupted. The text it had is kept.";
  if (code.startsWith("provider_") || code === "stream_incomplete" || code === "upstream_error") {
    return (
      "The model's provider failed before the answer was finished. " +
      "The part above is stored; you can regenerate the answer."
    );
  }
  return error.message || "Something went wrong.";
}

async function failure(response) {
  let code = `http_${response.status}`;
  let message = response.statusText || "request failed";
  let requestId = response.headers.get("x-request-id");
  try {
    const body = await response.json();
    if (body?.error) {
      ({ code, message } = body.error);
      requestId = body.error.request_id ?? requestId;
    }
  } catch {
    // Not JSON: the status says enough.
  }
  const after = Number.parseInt(response.headers.get("retry-after") ?? "", 10);
  return new ApiError(response.status, code, message, {
    retryAfter: Number.isFinite(after) ? after : null,
    requestId,
  });
}

/** Splits a body of Server-Sent Events into {id, event, data} objects. */
async function* serverSentEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end = buffer.search(/\r?\n\r?\n/);
      while (end >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        const event = { id: null, event: "message", data: "" };
        for (const line of block.split(/\r?\n/)) {
          if (!line || line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "id") event.id = text;
          else if (field === "event") event.event = text;
          else if (field === "data") event.data += (event.data ? "\n" : "") + text;
        }
        if (event.data) yield { id: event.id, event: event.event, data: JSON.parse(event.data) };
        end = buffer.search(/\r?\n\r?\n/);
      }
    }
  } finally {
    reader.releaseLock();
  }
}

export class Api {
  /** `onUnauthorized(error)` runs when a call is refused for its credentials (401). */
  constructor(token, onUnauthorized) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  headers(extra = {}) {
    return { Authorization: `Bearer ${this.token}`, ...extra };
  }

  async fetch(method, path, { json, body, headers = {}, signal } = {}) {
    const init = { method, headers: this.headers(headers), signal };
    if (json !== undefined) {
      init.body = JSON.stringify(json);
      init.headers["Content-Type"] = "application/json";
    } else if (body !== undefined) {
      init.body = body;
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "network", "the network failed");
    }
    if (!response.ok) {
      const error = await failure(response);
      if (error.status === 401) this.onUnauthorized?.(error);
      throw error;
    }
    return response;
  }

  /** The JSON answer of a call (null for 204). */
  async request(method, path, options = {}) {
    const response = await this.fetch(method, path, options);
    if (response.status === 204) return null;
    return response.json();
  }

  /** The events of a streamed call, as they arrive. */
  async *stream(method, path, { json, headers = {}, signal } = {}) {
    const response = await this.fetch(method, path, {
      json,
      headers: { Accept: "text/event-stream", ...headers },
      signal,
    });
    try {
      yield* serverSentEvents(response.body);
    } catch (error) {
      if (error.name === "AbortError" || error instanceof SyntaxError) throw error;
      throw new ApiError(0, "network", "the connection was lost");
    }
  }

  /** Uploads `form` with XMLHttpRequest, the one browser API that reports upload progress. */
  upload(path, form, onProgress) {
    return new Promise((resolve, reject) => {
      const request = new XMLHttpRequest();
      request.open("POST", path);
      request.setRequestHeader("Authorization", `Bearer ${this.token}`);
      request.responseType = "json";
      request.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) onProgress(event.loaded / event.total);
      });
      request.addEventListener("error", () => {
        reject(new ApiError(0, "network", "the network failed"));
      });
      request.addEventListener("load", () => {
        if (request.status >= 200 && request.status < 300) {
          resolve(request.response);
          return;
        }
        const envelope = request.response?.error ?? {};
        const after = Number.parseInt(request.getResponseHeader("retry-after") ?? "", 10);
        const error = new ApiError(
          request.status,
          envelope.code ?? `http_${request.status}`,
          envelope.message ?? "the upload failed",
          { retryAfter: Number.isFinite(after) ? after : null, requestId: envelope.request_id },
        );
        if (error.status === 401) this.onUnauthorized?.(error);
        reject(error);
      });
      request.send(form);
    });
  }
}
