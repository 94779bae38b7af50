// The chat page: sign-in, the conversation list, a conversation with its streamed answers,
// and the side panels (sources, knowledge, memories, account).
//
// The bearer token is kept in sessionStorage: it survives a reload of the tab (so a dropped
// answer can be read back), is gone when the tab closes, is not shared with other tabs, and
// unlike a cookie is never sent by the browser on its own (no cross-site request can use it).
import { Account, Memories } from "./account.js";
import { Api, ApiError, describe } from "./api.js";
import { $, h, pause, say } from "./dom.js";
import { Knowledge } from "./knowledge.js";
import { renderMarkdown } from "./markdown.js";

const TOKEN_KEY = "parley.token";
const SIGN_IN_MESSAGE_KEY = "parley.sign-in-message";
const THEME_KEY = "parley.theme";
const KNOWN_KB_KEY = "parley.knowledge-bases";
const UNTITLED = "New conversation";
const PAGE_SIZE = 30;
const SEARCH_PAGES = 10; // pages fetched at most to search titles
const RECONNECT_TRIES = 30;

const state = {
  api: null,
  me: null,
  conversations: [],
  nextPage: null,
  current: null, // the open conversation
  messages: [], // its messages, oldest first
  turn: null, // the answer streaming now
  models: { default_model: "", models: [] },
  knowledge: null,
};

// -- sign-in --------------------------------------------------------------------------------

function showSignIn(message = "") {
  $("app-view").hidden = true;
  $("sign-in-view").hidden = false;
  say($("sign-in-error"), message);
  const dev = document.querySelector('meta[name="parley-dev-sign-in"]')?.content === "on";
  $("dev-sign-in").hidden = !dev;
  (dev ? $("dev-tenant") : $("token")).focus();
}

// Signing out reloads the page, so nothing of the last user stays in memory or the DOM.
function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.setItem(SIGN_IN_MESSAGE_KEY, message);
  state.turn?.controller.abort();
  state.api = null;
  location.reload();
}

async function signIn(token) {
  const api = new Api(token, (error) => signOut(describe(error)));
  let me;
  try {
    me = await api.request("GET", "/v1/me");
  } catch (error) {
    if (error.status !== 401) showSignIn(describe(error));
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  state.api = api;
  state.me = me;
  $("sign-in-view").hidden = true;
  $("app-view").hidden = false;
  $("who").replaceChildren(h("span", { class: "visually-hidden" }, "Signed in as "), `${me.user_id} · ${me.tenant_id}`);
  $("who").title = `User ${me.user_id} of tenant ${me.tenant_id}`;
  state.knowledge = new Knowledge(api, { onIndexed: rememberKnowledgeBase });
  new Account(api, me, {
    onDeleted: () => {
      openConversation(null);
      loadConversations();
    },
  });
  new Memories(api).load();
  rememberKnowledgeBase(null);
  await Promise.all([loadModels(), loadConversations()]);
  // Someone quick may have sent a first message meanwhile: that conversation stays open.
  if (!state.current) await openConversation(state.conversations[0] ?? null);
  state.knowledge.list();
  $("prompt").focus();
}

$("dev-sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const response = await fetch("/v1/dev/sign-in", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ tenant: $("dev-tenant").value.trim(), user: $("dev-user").value.trim() }),
    });
    const body = await response.json();
    if (!response.ok) throw new ApiError(response.status, body.error.code, body.error.message);
    await signIn(body.token);
  } catch (error) {
    say($("sign-in-error"), error instanceof ApiError ? describe(error) : "Parley cannot be reached.");
  }
});

$("token-sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("token").value.trim().replace(/^Bearer\s+/i, "");
  $("token").value = "";
  await signIn(token);
});

$("sign-out").addEventListener("click", () => signOut());
$("sign-out-account").addEventListener("click", () => signOut());

// -- notices --------------------------------------------------------------------------------

let noticeTimer = null;

function notice(text, { sticky = false } = {}) {
  clearTimeout(noticeTimer);
  say($("notice"), text);
  if (text && !sticky) noticeTimer = setTimeout(() => say($("notice"), ""), 12_000);
}

function announce(text) {
  $("announcer").textContent = text;
}

// -- models and knowledge bases -------------------------------------------------------------

async function loadModels() {
  try {
    state.models = await state.api.request("GET", "/v1/models");
  } catch (error) {
    notice(describe(error));
    return;
  }
  const select = $("model");
  select.replaceChildren(
    ...state.models.models.map((model) =>
      h("option", { value: model.id }, model.local ? `${model.id} (offline, extractive)` : model.id),
    ),
  );
  select.value = state.models.default_model;
}

$("model").addEventListener("change", () => {
  if (state.current) updateSettings({ model: $("model").value });
});

function rememberKnowledgeBase(kb) {
  const known = new Set(JSON.parse(localStorage.getItem(KNOWN_KB_KEY) ?? "[]"));
  if (kb) known.add(kb);
  for (const c of state.conversations) if (c.settings.knowledge_base_id) known.add(c.settings.knowledge_base_id);
  localStorage.setItem(KNOWN_KB_KEY, JSON.stringify([...known].slice(0, 50)));
  $("known-knowledge-bases").replaceChildren(...[...known].map((name) => h("option", { value: name })));
}

$("knowledge-base").addEventListener("change", () => {
  const kb = $("knowledge-base").value.trim();
  if (kb && !/^[A-Za-z0-9._:-]{1,100}$/.test(kb)) {
    notice("A knowledge base name is letters, digits and . _ : - only.");
    return;
  }
  if (state.current) updateSettings({ knowledge_base_id: kb || null });
  if (kb) {
    rememberKnowledgeBase(kb);
    state.knowledge.open(kb);
  }
});

async function updateSettings(settings) {
  try {
    const updated = await state.api.request("PATCH", `/v1/conversations/${state.current.id}`, {
      json: { settings },
    });
    replaceConversation(updated);
    const what = settings.model ? `Model: ${settings.model}` : `Knowledge base: ${settings.knowledge_base_id ?? "none"}`;
    announce(`${what} for this conversation.`);
  } catch (error) {
    notice(describe(error));
  }
}

// -- the conversation list ------------------------------------------------------------------

async function loadConversations(more = false) {
  const query = new URLSearchParams({ page_size: String(PAGE_SIZE) });
  if (more && state.nextPage) query.set("page_token", state.nextPage);
  try {
    const page = await state.api.request("GET", `/v1/conversations?${query}`);
    if (more) state.conversations = [...state.conversations, ...page.conversations];
    else {
      // A conversation started while this page was on its way stays listed.
      const listed = new Set(page.conversations.map((c) => c.id));
      state.conversations = [...state.conversations.filter((c) => !listed.has(c.id) && c.id === state.current?.id), ...page.conversations];
    }
    state.nextPage = page.next_page_token;
  } catch (error) {
    notice(describe(error));
  }
  renderConversations();
}

function renderConversations() {
  const term = $("search").value.trim().toLowerCase();
  const shown = state.conversations.filter((c) => !term || (c.title || UNTITLED).toLowerCase().includes(term));
  $("conversation-list").replaceChildren(
    ...shown.map((conversation) =>
      h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            class: "conversation",
            "aria-current": conversation.id === state.current?.id ? "page" : null,
            onclick: () => {
              openConversation(conversation);
              closeOverlays();
            },
          },
          h("span", { class: "conversation-name" }, conversation.title || UNTITLED),
          h("span", { class: "hint" }, when(conversation.updated_at)),
        ),
      ),
    ),
  );
  $("more-conversations").hidden = !state.nextPage;
  say($("list-empty"), shown.length ? "" : term ? "No conversation has that in its title." : "No conversations yet.");
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : date.toLocaleDateString();
}

function replaceConversation(updated) {
  state.conversations = state.conversations.map((c) => (c.id === updated.id ? updated : c));
  if (state.current?.id === updated.id) state.current = updated;
  renderConversations();
  renderHead();
}

let searching = 0;
$("search").addEventListener("input", async () => {
  renderConversations();
  // Titles are searched in what is loaded; more pages are fetched while a search runs.
  const run = ++searching;
  for (let pages = 0; $("search").value.trim() && state.nextPage && pages < SEARCH_PAGES; pages += 1) {
    await loadConversations(true);
    if (run !== searching) return;
  }
});
$("more-conversations").addEventListener("click", () => loadConversations(true));

$("new-conversation").addEventListener("click", async () => {
  await createConversation();
  closeOverlays();
  // The prompt takes the focus unless someone has already moved on, e.g. to the knowledge base.
  const focus = document.activeElement;
  if (!focus || focus === document.body || focus === $("new-conversation")) $("prompt").focus();
});

async function createConversation(title = UNTITLED) {
  const kb = $("knowledge-base").value.trim();
  const settings = { model: $("model").value || null, knowledge_base_id: kb || null };
  try {
    const created = await state.api.request("POST", "/v1/conversations", { json: { title, settings } });
    state.conversations = [created, ...state.conversations];
    await openConversation(created);
    return created;
  } catch (error) {
    notice(describe(error));
    return null;
  }
}

$("rename").addEventListener("click", () => {
  $("rename-input").value = state.current.title || "";
  $("conversation-title").hidden = true;
  $("rename-form").hidden = false;
  $("rename-input").focus();
  $("rename-input").select();
});

function endRename() {
  $("rename-form").hidden = true;
  $("conversation-title").hidden = false;
  $("rename").focus();
}

$("rename-cancel").addEventListener("click", endRename);
$("rename-input").addEventListener("keydown", (event) => {
  if (event.key === "Escape") endRename();
});
$("rename-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  await rename(state.current, $("rename-input").value.trim());
  endRename();
});

async function rename(conversation, title) {
  if (!title || title === conversation.title) return;
  try {
    const updated = await state.api.request("PATCH", `/v1/conversations/${conversation.id}`, { json: { title } });
    replaceConversation(updated);
  } catch (error) {
    notice(describe(error));
  }
}

$("delete-conversation").addEventListener("click", async () => {
  const conversation = state.current;
  if (!conversation || !confirm(`Delete “${conversation.title || UNTITLED}” and its messages?`)) return;
  try {
    await state.api.request("DELETE", `/v1/conversations/${conversation.id}`);
  } catch (error) {
    if (error.status !== 404) {
      notice(describe(error));
      return;
    }
  }
  state.conversations = state.conversations.filter((c) => c.id !== conversation.id);
  announce("Conversation deleted.");
  await openConversation(state.conversations[0] ?? null);
});

// -- a conversation -------------------------------------------------------------------------

function renderHead() {
  const conversation = state.current;
  $("conversation-title").textContent = conversation ? conversation.title || UNTITLED : UNTITLED;
  $("rename").disabled = !conversation;
  $("delete-conversation").disabled = !conversation;
  const kb = conversation?.settings.knowledge_base_id ?? "";
  if (document.activeElement !== $("knowledge-base")) $("knowledge-base").value = kb;
  if (conversation?.settings.model) $("model").value = conversation.settings.model;
  else if (state.models.default_model) $("model").value = state.models.default_model;
}

async function openConversation(conversation) {
  if (state.turn && state.turn.conversationId !== conversation?.id) {
    // The answer goes on being written on the server; it is read back when opened again.
    state.turn.controller.abort();
    state.turn = null;
    setStreaming(false);
  }
  state.current = conversation;
  state.messages = [];
  $("messages").replaceChildren();
  renderHead();
  renderConversations();
  showSources(null);
  if (!conversation) return;
  if (conversation.settings.knowledge_base_id) state.knowledge?.open(conversation.settings.knowledge_base_id);
  let token = "";
  try {
    for (let pages = 0; pages < 20; pages += 1) {
      const query = new URLSearchParams({ page_size: "200" });
      if (token) query.set("page_token", token);
      const page = await state.api.request("GET", `/v1/conversations/${conversation.id}/messages?${query}`);
      if (state.current !== conversation) return;
      state.messages.push(...page.messages);
      token = page.next_page_token;
      if (!token) break;
    }
  } catch (error) {
    notice(describe(error));
    return;
  }
  for (const message of state.messages) $("messages").append(messageView(message));
  refreshRegenerate();
  scrollToEnd();
  const last = state.messages.at(-1);
  if (last?.role === "assistant" && last.status === "in_progress") follow(conversation.id, last);
}

function scrollToEnd() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

function nearEnd() {
  const list = $("messages");
  return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
}

// -- messages -------------------------------------------------------------------------------

function messageView(message) {
  if (message.role === "user") {
    return h("li", { class: "message user", "data-id": message.id },
      h("span", { class: "visually-hidden" }, "You said:"),
      h("div", { class: "bubble" }, message.content));
  }
  const view = h("li", { class: "message assistant", "data-id": message.id ?? "" });
  view.message = message;
  view.tools = h("ul", { class: "tools", "aria-label": "Tool activity", hidden: true });
  view.body = h("div", { class: "markdown" });
  view.status = h("p", { class: "status" });
  view.usage = h("p", { class: "usage", hidden: true });
  const copy = h("button", { type: "button", class: "quiet", onclick: () => copyAnswer(view, copy) }, "Copy");
  view.regenerate = h("button", { type: "button", class: "quiet", onclick: () => regenerate() }, "Regenerate");
  view.up = h("button", { type: "button", class: "quiet", "aria-pressed": "false", onclick: () => rate(view, "up") }, "Helpful");
  view.down = h("button", { type: "button", class: "quiet", "aria-pressed": "false", onclick: () => rate(view, "down") }, "Not helpful");
  const usage = h("button", { type: "button", class: "quiet", "aria-expanded": "false", onclick: () => toggleUsage(view, usage) }, "Usage");
  view.sources = h("button", { type: "button", class: "quiet", hidden: true, onclick: () => showSources(view.message) }, "Sources");
  view.actions = h("div", { class: "actions", role: "group", "aria-label": "Answer actions" },
    copy, view.regenerate, view.up, view.down, usage, view.sources);
  view.append(h("span", { class: "visually-hidden" }, "Parley answered:"), view.tools, view.body, view.status, view.actions, view.usage);
  renderAnswer(view);
  return view;
}

function renderAnswer(view) {
  const message = view.message;
  const citations = message.citations ?? [];
  view.body.replaceChildren(renderMarkdown(message.content, citations, (marker) => showSources(message, marker)));
  view.sources.hidden = !citations.length;
  const streaming = message.status === "in_progress";
  view.setAttribute("aria-busy", streaming ? "true" : "false");
  view.actions.hidden = streaming;
  view.classList.toggle("streaming", streaming);
  if (message.status === "cancelled") setStatus(view, "Stopped. The answer so far is kept.");
  else if (message.status === "failed") setStatus(view, describe({ code: message.error_code ?? "", message: "The answer failed." }));
  else if (!streaming) setStatus(view, "");
  if (!message.content && streaming && !view.status.textContent) setStatus(view, "Thinking…", "pending");
}

function setStatus(view, text, kind = "") {
  view.status.textContent = text;
  view.status.className = `status ${kind}`;
  view.status.hidden = !text;
}

let frame = 0;
function renderSoon(view) {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    const follow = nearEnd();
    renderAnswer(view);
    if (follow) scrollToEnd();
  });
}

function refreshRegenerate() {
  const views = [...$("messages").querySelectorAll(".message.assistant")];
  views.forEach((view, i) => {
    view.regenerate.hidden = i !== views.length - 1;
  });
}

async function copyAnswer(view, button) {
  try {
    await navigator.clipboard.writeText(view.message.content);
    button.textContent = "Copied";
  } catch {
    const range = document.createRange();
    range.selectNodeContents(view.body);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    button.textContent = "Selected: press Ctrl+C";
  }
  setTimeout(() => {
    button.textContent = "Copy";
  }, 2000);
}

async function rate(view, rating) {
  const message = view.message;
  try {
    await state.api.request("PUT", `/v1/conversations/${message.conversation_id}/messages/${message.id}/feedback`, {
      json: { rating },
    });
    view.up.setAttribute("aria-pressed", String(rating === "up"));
    view.down.setAttribute("aria-pressed", String(rating === "down"));
    announce(rating === "up" ? "Thanks: marked as a good answer." : "Thanks: marked as a bad answer.");
  } catch (error) {
    notice(describe(error));
  }
}

function toggleUsage(view, button) {
  const open = view.usage.hidden;
  const usage = view.message.usage;
  if (open) {
    view.usage.textContent = usage
      ? `${usage.input_tokens} tokens in, ${usage.output_tokens} out · $${usage.cost_usd.toFixed(6)}` +
        `${usage.estimated ? " (estimated)" : ""}${view.message.model ? ` · ${view.message.model}` : ""}`
      : "No usage was reported for this answer.";
  }
  view.usage.hidden = !open;
  button.setAttribute("aria-expanded", String(open));
}

// -- sources --------------------------------------------------------------------------------

function showSources(message, marker = null) {
  const citations = message?.citations ?? [];
  $("sources-empty").hidden = citations.length > 0;
  $("sources").replaceChildren(
    ...citations.map((c) =>
      h("li", { class: "source", id: `source-${c.marker}`, tabIndex: -1, "data-marker": c.marker },
        h("h3", {}, h("span", { class: "marker" }, c.marker), " ", c.title || "Untitled document"),
        h("p", { class: "hint" }, [c.page ? `Page ${c.page}` : null, c.source_uri].filter(Boolean).join(" · ")),
        h("blockquote", {}, c.snippet)),
    ),
  );
  if (marker === null) return;
  selectTab("sources");
  openPanel();
  const item = document.getElementById(`source-${marker}`);
  for (const other of $("sources").children) other.classList.toggle("chosen", other === item);
  item?.scrollIntoView({ block: "nearest" });
  item?.focus();
}

// -- a turn ---------------------------------------------------------------------------------

function setStreaming(on) {
  $("send").hidden = on;
  $("stop").hidden = !on;
  if (!on && document.activeElement === $("stop")) $("prompt").focus();
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});

$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  } else if (event.key === "Escape" && state.turn) {
    stop();
  }
});

$("stop").addEventListener("click", () => stop());

async function send() {
  const content = $("prompt").value.trim();
  if (!content || state.turn) return;
  const conversation = state.current ?? (await createConversation(content.slice(0, 60)));
  if (!conversation) return;
  $("prompt").value = "";
  const user = { id: null, role: "user", content };
  $("messages").append(messageView(user));
  const userView = $("messages").lastElementChild;
  const started = await turn(conversation, `/v1/conversations/${conversation.id}/messages`, {
    json: { content },
    headers: { "Idempotency-Key": crypto.randomUUID() },
  });
  if (!started) {
    userView.remove();
    if (!$("prompt").value) $("prompt").value = content;
    return;
  }
  if (conversation.title === UNTITLED && !conversation.message_count) {
    rename(conversation, content.replace(/\s+/g, " ").slice(0, 60));
  }
}

async function regenerate() {
  if (state.turn || !state.current) return;
  const views = $("messages").querySelectorAll(".message.assistant");
  const previous = views[views.length - 1];
  const started = await turn(state.current, `/v1/conversations/${state.current.id}/regenerate`, { json: {} }, previous);
  if (started) previous?.remove();
}

/**
 * Streams one answer into a new view; resolves false when it could not start (the error is
 * shown), true once it has ended however it ended.
 */
async function turn(conversation, path, request, replacing = null) {
  const message = { id: null, conversation_id: conversation.id, role: "assistant", content: "", status: "in_progress", citations: [] };
  const view = messageView(message);
  if (replacing) replacing.hidden = true;
  $("messages").append(view);
  scrollToEnd();
  const current = { conversationId: conversation.id, controller: new AbortController(), answerId: null, lastEventId: null, view, stopping: false };
  state.turn = current;
  setStreaming(true);
  try {
    let events;
    for (let attempt = 0; ; attempt += 1) {
      try {
        events = state.api.stream("POST", path, { ...request, signal: current.controller.signal });
        await consume(events, current);
        break;
      } catch (error) {
        // A send whose answer never started is sent again with the same Idempotency-Key:
        // the server replays the stored turn rather than storing a second message.
        if (!(error instanceof ApiError) || !error.network || current.answerId || attempt >= 2 || !request.headers) throw error;
        await pause(1000 * (attempt + 1), current.controller.signal);
      }
    }
  } catch (error) {
    if (error.name === "AbortError" && !current.answerId) {
      view.remove();
      if (replacing) replacing.hidden = false;
      if (state.current?.id === conversation.id) openConversation(state.current);
      return true;
    }
    if (error instanceof ApiError && error.network && current.answerId) {
      await reconnect(current);
    } else if (error.name !== "AbortError") {
      if (!current.answerId) {
        view.remove();
        if (replacing) replacing.hidden = false;
        notice(describe(error), { sticky: error.status === 429 });
        return false;
      }
      notice(describe(error));
    }
  } finally {
    if (state.turn === current) {
      state.turn = null;
      setStreaming(false);
    }
    refreshRegenerate();
  }
  return true;
}

/** Applies the events of a turn's stream to its view; throws when it ends without a result. */
async function consume(events, current) {
  const view = current.view;
  const message = view.message;
  for await (const { id, event, data } of events) {
    if (id) current.lastEventId = id;
    switch (event) {
      case "accepted":
        current.answerId = data.assistant_message_id;
        message.id = data.assistant_message_id;
        view.dataset.id = message.id;
        if (current.stopping) requestStop(current);
        break;
      case "citations":
        message.citations = data.citations;
        showSources(message);
        renderSoon(view);
        break;
      case "snapshot":
        message.content = data.text;
        renderSoon(view);
        break;
      case "delta":
        message.content += data.text;
        renderSoon(view);
        break;
      case "tool_call":
      case "tool_result":
        showTool(view, event, data);
        break;
      case "usage":
        message.usage = data;
        break;
      case "done":
        Object.assign(message, data.message);
        renderAnswer(view);
        announce("The answer is complete.");
        bumpConversation(current.conversationId);
        return;
      case "error":
        finishWithError(view, data);
        bumpConversation(current.conversationId);
        return;
      default:
        break;
    }
  }
  throw new ApiError(0, "network", "the stream ended early");
}

function finishWithError(view, data) {
  const message = view.message;
  message.status = data.code === "cancelled" ? "cancelled" : "failed";
  message.error_code = data.code;
  renderAnswer(view);
  const text = describe(data);
  setStatus(view, text, data.code === "cancelled" ? "" : "error");
  announce(text);
  // Read the stored answer back: its text, status and usage as kept.
  if (message.id) {
    state.api
      .request("GET", `/v1/conversations/${message.conversation_id}/messages/${message.id}`)
      .then((stored) => {
        Object.assign(message, stored);
        renderAnswer(view);
        if (data.code !== "cancelled") setStatus(view, text, "error");
      })
      .catch(() => {});
  }
}

function showTool(view, kind, data) {
  view.tools.hidden = false;
  if (kind === "tool_call") {
    view.tools.append(h("li", { "data-call": data.call_id }, h("span", { class: "tool-name" }, `${data.name}`), " ",
      h("code", {}, String(data.arguments ?? "").slice(0, 200))));
  } else {
    const line = [...view.tools.children].find((li) => li.dataset.call === data.call_id) ?? view.tools.appendChild(h("li", {}));
    line.append(" → ", h("span", { class: data.is_error ? "error" : "hint" }, String(data.result ?? "").slice(0, 200)));
  }
}

async function bumpConversation(id) {
  try {
    const fresh = await state.api.request("GET", `/v1/conversations/${id}`);
    state.conversations = [fresh, ...state.conversations.filter((c) => c.id !== id)];
    if (state.current?.id === id) state.current = fresh;
    renderConversations();
  } catch {
    // The list is refreshed on the next load.
  }
}

function stop() {
  const current = state.turn;
  if (!current) return;
  current.stopping = true;
  if (current.answerId) requestStop(current);
  // Before the answer has an id, the request is still being accepted: stop once it has one.
}

async function requestStop(current) {
  try {
    await state.api.request("POST", `/v1/conversations/${current.conversationId}/messages/${current.answerId}/cancel`);
  } catch (error) {
    if (error.network) current.controller.abort();
    else notice(describe(error));
  }
}

/** Reads an answer in progress back from the store after its stream was lost. */
async function reconnect(current) {
  const view = current.view;
  for (let attempt = 0; attempt < RECONNECT_TRIES && state.turn === current; attempt += 1) {
    setStatus(view, "Connection lost. Reconnecting… The answer goes on being written.", "pending");
    if (!navigator.onLine) {
      await new Promise((resolve) => {
        addEventListener("online", resolve, { once: true });
        setTimeout(resolve, 10_000);
      });
    } else {
      await pause(Math.min(500 * 2 ** attempt, 5000), current.controller.signal);
    }
    if (current.controller.signal.aborted) return;
    try {
      const headers = current.lastEventId ? { "Last-Event-ID": current.lastEventId } : {};
      const events = state.api.stream(
        "GET",
        `/v1/conversations/${current.conversationId}/messages/${current.answerId}/events`,
        { headers, signal: current.controller.signal },
      );
      setStatus(view, "");
      await consume(events, current);
      return;
    } catch (error) {
      if (!(error instanceof ApiError) || !error.network) {
        if (error.name !== "AbortError") notice(describe(error));
        return;
      }
    }
  }
  setStatus(view, "Parley cannot be reached. Reload the page to see the stored answer.", "error");
}

/** Follows an answer that was still being written when the conversation was opened. */
async function follow(conversationId, message) {
  const view = $("messages").querySelector(`[data-id="${CSS.escape(message.id)}"]`);
  if (!view || state.turn) return;
  const current = { conversationId, controller: new AbortController(), answerId: message.id, lastEventId: null, view, stopping: false };
  state.turn = current;
  setStreaming(true);
  try {
    await reconnect(current);
  } finally {
    if (state.turn === current) {
      state.turn = null;
      setStreaming(false);
    }
  }
}

// -- panels, theme, layout -------------------------------------------------------------------

const TABS = ["sources", "knowledge", "memories", "account"];

function selectTab(name) {
  for (const tab of TABS) {
    const selected = tab === name;
    $(`tab-${tab}`).setAttribute("aria-selected", String(selected));
    $(`tab-${tab}`).tabIndex = selected ? 0 : -1;
    $(`panel-${tab}`).hidden = !selected;
  }
  if (name === "knowledge") state.knowledge?.list();
}

for (const tab of TABS) {
  $(`tab-${tab}`).addEventListener("click", () => selectTab(tab));
  $(`tab-${tab}`).addEventListener("keydown", (event) => {
    const visible = TABS.filter((t) => !$(`tab-${t}`).hidden);
    const at = visible.indexOf(tab);
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    const next = visible[(at + step + visible.length) % visible.length];
    selectTab(next);
    $(`tab-${next}`).focus();
  });
}

function openPanel() {
  document.body.classList.add("panel-open");
  $("toggle-panel").setAttribute("aria-expanded", "true");
}

function closeOverlays() {
  document.body.classList.remove("sidebar-open");
  $("toggle-sidebar").setAttribute("aria-expanded", "false");
  if (matchMedia("(max-width: 1099px)").matches) {
    document.body.classList.remove("panel-open");
    $("toggle-panel").setAttribute("aria-expanded", "false");
  }
}

$("toggle-panel").addEventListener("click", () => {
  const open = !document.body.classList.contains("panel-open");
  document.body.classList.toggle("panel-open", open);
  $("toggle-panel").setAttribute("aria-expanded", String(open));
  if (open) $("side-panel").querySelector('[role="tab"][aria-selected="true"]').focus();
});

$("toggle-sidebar").addEventListener("click", () => {
  const open = !document.body.classList.contains("sidebar-open");
  document.body.classList.toggle("sidebar-open", open);
  $("toggle-sidebar").setAttribute("aria-expanded", String(open));
  if (open) $("new-conversation").focus();
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !state.turn) closeOverlays();
});

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  $("toggle-theme").setAttribute("aria-pressed", String(theme === "dark"));
}

$("toggle-theme").addEventListener("click", () => {
  const theme = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  localStorage.setItem(THEME_KEY, theme);
  applyTheme(theme);
});

// -- start ------------------------------------------------------------------------------------

applyTheme(localStorage.getItem(THEME_KEY) ?? (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));
document.body.classList.toggle("panel-open", matchMedia("(min-width: 1100px)").matches);
$("toggle-panel").setAttribute("aria-expanded", String(document.body.classList.contains("panel-open")));
const saved = sessionStorage.getItem(TOKEN_KEY);
const reason = sessionStorage.getItem(SIGN_IN_MESSAGE_KEY) ?? "";
sessionStorage.removeItem(SIGN_IN_MESSAGE_KEY);
if (saved) {
  signIn(saved).then(() => {
    if (!state.api) showSignIn();
  });
} else {
  showSignIn(reason);
}
