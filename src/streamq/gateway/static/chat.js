// The streamq chat page: a conversation through the Responses door, each answer a queued job.
//
// Each turn is a background response chained to the previous one with previous_response_id.
// Its id goes into the URL fragment (#r=resp_a,resp_b: a link that opens the same conversation
// anywhere) and its state into localStorage with the sequence number of the last event applied,
// so after a reload the page resumes with GET /v1/responses/{id}?stream=true&starting_after=N:
// exactly the events after it, no text lost or repeated. A page without that state (a second
// tab elsewhere, a shared link) replays the response from its start, then follows it live.
//
// While the job waits, the gateway tells its place as SSE comments (": queued {...}"), which
// every SSE client (the openai SDKs, the Vercel AI SDK) skips and this page reads: "3 ahead of
// you…", or what a started job waits for, until its first text.
//
// fetch() rather than EventSource: EventSource cannot send an Authorization header. Model text
// reaches the DOM only as textContent, or as markdown rendered by marked and then sanitized by
// DOMPurify (with the markdown's raw HTML escaped first).
"use strict";

const ENDINGS = new Set(["response.completed", "response.incomplete", "response.failed"]);
const ENDED = new Set(["completed", "incomplete", "cancelled", "failed", "expired", "refused"]);
const MAX_BACKOFF_MS = 5000;
const CACHE_PREFIX = "streamq-turn:";
const KEPT = ["id", "prompt", "items", "seq", "status", "usage", "error", "incomplete",
  "sentAt", "firstAt", "endAt"];
const RESTARTED = "the worker running this response restarted";
const WAITS_FOR = {
  concurrency: "the model's concurrency limit",
  token_budget: "the model's token budget",
  request_budget: "the model's request budget",
  rate_limited: "the provider's rate limit",
};
const $ = (id) => document.getElementById(id);

const page = { turns: [], reconnects: 0, ids: "" };

// ---- the gateway token, as before: kept for this tab only ----

function token() {
  return sessionStorage.getItem("streamq-token") || "";
}

function headers(extra) {
  const all = Object.assign({}, extra);
  if (token()) all.Authorization = "Bearer " + token();
  return all;
}

function setStatus(text, state) {
  const status = $("status");
  status.textContent = text;
  if (state) status.dataset.state = state;
  status.dataset.reconnects = String(page.reconnects);
}

function needToken() {
  $("token-form").hidden = false;
  $("token").focus();
  setStatus("The gateway needs a token.", "auth");
}

// ---- the conversation in the URL fragment and localStorage ----

function idsFromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  return (params.get("r") || "").split(",").filter((id) => /^resp_[\w-]+$/.test(id));
}

function ids() {
  return page.turns.filter((turn) => turn.id).map((turn) => turn.id);
}

function saveHash() {
  page.ids = ids().join(",");
  const hash = page.ids ? "#r=" + page.ids : "";
  history.replaceState(null, "", location.pathname + location.search + hash);
  $("share").href = location.href;
  $("share").hidden = !page.ids;
}

function cached(id) {
  try {
    const saved = JSON.parse(localStorage.getItem(CACHE_PREFIX + id) || "null");
    return saved && saved.id === id ? saved : null;
  } catch (error) {
    return null;
  }
}

function persist(turn) {
  if (!turn.id) return;
  const kept = {};
  for (const name of KEPT) kept[name] = turn[name];
  try {
    localStorage.setItem(CACHE_PREFIX + turn.id, JSON.stringify(kept));
  } catch (error) {
    // storage full or disabled: the page still works, a reload replays from the start
  }
}

// ---- turns and their rendering ----

function newTurn(fields) {
  const turn = Object.assign(
    { id: null, prompt: null, items: [], seq: -1, status: "queued", usage: null, error: null,
      incomplete: null, sentAt: null, firstAt: null, endAt: null },
    fields,
    { following: false, controller: null, dropped: false, blocks: [], timer: null, place: null },
  );
  const section = document.createElement("section");
  section.className = "turn";
  section.innerHTML =
    '<div class="bubble user"></div><div class="bubble assistant"><div class="items"></div>' +
    '<div class="notices"></div><div class="meta"></div></div>';
  turn.el = {
    section,
    user: section.querySelector(".user"),
    items: section.querySelector(".items"),
    notices: section.querySelector(".notices"),
    meta: section.querySelector(".meta"),
  };
  $("intro").hidden = true;
  $("transcript").appendChild(section);
  page.turns.push(turn);
  render(turn);
  return turn;
}

function ended(turn) {
  return ENDED.has(turn.status);
}

// HTML in the model's markdown is shown as text, never parsed: DOMPurify would strip what is
// dangerous, but parsing alone makes Chromium compile (and the CSP refuse) inline handlers.
function escapeHtml(text) {
  const entities = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  return text.replace(/[&<>"']/g, (char) => entities[char]);
}

if (window.marked) window.marked.use({ renderer: { html: (token) => escapeHtml(token.text) } });

function markdown(element, text) {
  if (window.marked && window.DOMPurify) {
    const html = window.marked.parse(text, { async: false, gfm: true });
    element.innerHTML = window.DOMPurify.sanitize(html, {
      FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select"],
      FORBID_ATTR: ["style"],
    });
    for (const link of element.querySelectorAll("a[href]")) {
      link.target = "_blank";
      link.rel = "noopener noreferrer";
    }
  } else {
    element.textContent = text;  // the renderer did not load: plain text, never HTML
  }
}

function block(turn, index) {
  const item = turn.items[index];
  let element = turn.blocks[index];
  if (element && element.dataset.type === item.type) return element;
  if (item.type === "message") {
    element = document.createElement("div");
    element.className = "answer";
  } else {
    element = document.createElement("details");
    element.className = "block " + (item.type === "function_call" ? "tool" : "reasoning");
    element.innerHTML = "<summary></summary>" +
      (item.type === "function_call" ? "<pre><code></code></pre>" : '<div class="body"></div>');
    element.open = item.type === "function_call";
  }
  element.dataset.type = item.type;
  if (turn.blocks[index]) turn.blocks[index].replaceWith(element);
  else turn.el.items.appendChild(element);
  turn.blocks[index] = element;
  return element;
}

function renderItems(turn) {
  turn.items.forEach((item, index) => {
    if (!item) return;
    const element = block(turn, index);
    if (item.type === "message") {
      if (element.dataset.text !== item.text) {
        element.dataset.text = item.text;
        markdown(element, item.text);
      }
    } else if (item.type === "function_call") {
      element.querySelector("summary").textContent = "Tool call: " + (item.name || "…");
      element.querySelector("code").textContent = item.arguments;
    } else {
      const running = item.status === "in_progress" && !ended(turn);
      element.querySelector("summary").textContent = running ? "Reasoning…" : "Reasoning";
      element.querySelector(".body").textContent = item.text;
    }
  });
}

function notice(turn, kind, text, retry) {
  const box = document.createElement("div");
  box.className = "notice " + kind;
  box.textContent = text;
  if (retry && turn.prompt) {
    const again = document.createElement("button");
    again.type = "button";
    again.textContent = "Ask again";
    again.addEventListener("click", () => {
      $("prompt").value = turn.prompt;
      $("prompt").focus();
    });
    box.appendChild(again);
  }
  turn.el.notices.appendChild(box);
}

// Where a turn's job waits: in the queue, or (started) for admission; "" once it answers.
function placeText(turn) {
  const place = turn.place;
  if (!place || turn.firstAt !== null || ended(turn)) return "";
  const eta = typeof place.eta === "number" ? " (about " + Math.ceil(place.eta) + " s)" : "";
  if (place.reason !== "queue") {
    const why = WAITS_FOR[place.reason] || place.reason;
    return "Waiting for " + why + "…" + eta;
  }
  if (place.ahead === 0) return "Next in line…" + eta;
  return place.ahead + " ahead of you…" + eta;
}

function renderNotices(turn) {
  turn.el.notices.replaceChildren();
  const message = (turn.error && turn.error.message) || "";
  const waiting = placeText(turn);
  if (waiting) {
    notice(turn, "queue", waiting);
  } else if (turn.status === "failed" && message.startsWith(RESTARTED)) {
    notice(turn, "warn", "The job restarted on another worker after it had begun to answer: " +
      "this answer stops here.", true);
  } else if (turn.status === "failed" || turn.status === "refused") {
    notice(turn, "error", "The answer failed: " + (message || "unknown error") + ".", true);
  } else if (turn.status === "cancelled") {
    notice(turn, "warn", "Stopped.");
  } else if (turn.status === "incomplete") {
    const why = (turn.incomplete && turn.incomplete.reason) || "cut short";
    notice(turn, "warn", "The answer was cut short (" + why + ").");
  } else if (turn.status === "expired") {
    notice(turn, "error", "This answer is gone: its stream expired (STREAMQ_STREAM_TTL).");
  }
}

function renderMeta(turn) {
  const parts = [];
  if (turn.sentAt && turn.firstAt) {
    parts.push("first token " + ((turn.firstAt - turn.sentAt) / 1000).toFixed(2) + " s");
  }
  const tokens = turn.usage && turn.usage.output_tokens;
  if (tokens && turn.firstAt && turn.endAt && turn.endAt > turn.firstAt) {
    parts.push((tokens / ((turn.endAt - turn.firstAt) / 1000)).toFixed(1) + " tokens/s");
  }
  if (tokens) parts.push(tokens + " tokens");
  turn.el.meta.textContent = parts.join(" · ");
}

function render(turn) {
  clearTimeout(turn.timer);
  turn.timer = null;
  const root = document.scrollingElement;
  const atBottom = root.scrollHeight - root.scrollTop - root.clientHeight < 160;
  const section = turn.el.section;
  section.dataset.status = turn.status;
  if (turn.id) section.dataset.id = turn.id;
  turn.el.user.textContent = turn.prompt === null ? "…" : turn.prompt;
  renderItems(turn);
  renderNotices(turn);
  renderMeta(turn);
  if (atBottom) root.scrollTop = root.scrollHeight;
  buttons();
}

// Markdown is rendered at most every 40 ms while text streams in.
function renderSoon(turn) {
  if (turn.timer === null) turn.timer = setTimeout(() => render(turn), 40);
}

function last() {
  return page.turns[page.turns.length - 1] || null;
}

function buttons() {
  const turn = last();
  const running = turn !== null && !ended(turn);
  $("send").disabled = running;
  $("stop").disabled = !(running && turn.id);
}

// ---- applying the Responses events ----

function firstToken(turn) {
  if (turn.firstAt === null && turn.sentAt !== null) turn.firstAt = Date.now();
  turn.place = null;  // it answers: no longer waiting
}

function apply(turn, event) {
  const item = turn.items[event.output_index];
  switch (event.type) {
    case "response.created":
    case "response.queued":
    case "response.in_progress":
      turn.status = event.response.status;
      break;
    case "response.output_item.added":
      turn.items[event.output_index] = {
        type: event.item.type,
        text: "",
        name: event.item.name || "",
        arguments: event.item.arguments || "",
        status: "in_progress",
      };
      break;
    case "response.output_text.delta":
    case "response.refusal.delta":
    case "response.reasoning_summary_text.delta":
      if (item) item.text += event.delta;
      firstToken(turn);
      break;
    case "response.function_call_arguments.delta":
      if (item) item.arguments += event.delta;
      firstToken(turn);
      break;
    case "response.output_item.done":
      if (item) item.status = event.item.status || "completed";
      break;
    case "response.completed":
    case "response.incomplete":
    case "response.failed":
      turn.status = event.response.status;
      turn.usage = event.response.usage;
      turn.error = event.response.error;
      turn.incomplete = event.response.incomplete_details;
      if (turn.endAt === null && turn.sentAt !== null) turn.endAt = Date.now();
      break;
    default:
      break;  // content parts, .done events, newer event types: nothing to show
  }
  turn.seq = event.sequence_number;
}

function parseFrames(buffer) {
  const frames = [];
  const parts = buffer.replace(/\r\n/g, "\n").split("\n\n");
  const rest = parts.pop();
  for (const part of parts) {
    const frame = { event: "message", data: [], queued: null };
    for (const line of part.split("\n")) {
      if (line.startsWith(":")) {
        const note = line.slice(1).trim();
        if (note.startsWith("queued ")) {
          try {
            frame.queued = JSON.parse(note.slice("queued ".length));
          } catch (error) {
            // not ours to read: skipped, as any comment
          }
        }
        continue;
      }
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") frame.event = value;
      else if (field === "data") frame.data.push(value);
    }
    if (frame.data.length || frame.queued) frames.push(frame);
  }
  return [frames, rest];
}

// One connection: "end" when the response ended (or cannot be followed), "retry" to resume.
async function readOnce(turn) {
  turn.controller = new AbortController();
  const url = "v1/responses/" + encodeURIComponent(turn.id) +
    "?stream=true&starting_after=" + turn.seq;
  const response = await fetch(url, {
    headers: headers({}), signal: turn.controller.signal, cache: "no-store",
  });
  if (response.status === 401) {
    needToken();
    return "auth";
  }
  if (response.status === 404) {
    turn.status = "expired";
    return "end";
  }
  if (response.status === 429 || response.status >= 500) return "retry";
  if (!response.ok) {
    turn.status = "failed";
    turn.error = { message: "cannot follow it (HTTP " + response.status + ")" };
    return "end";
  }
  setStatus(turn.status === "queued" ? "Queued…" : "Answering…", "streaming");
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return "retry";  // cut before the end: resume after the last event applied
    buffer += decoder.decode(value, { stream: true });
    const [frames, rest] = parseFrames(buffer);
    buffer = rest;
    let outcome = null;
    for (const frame of frames) {
      if (turn.dropped) return "end";
      if (frame.queued) {
        turn.place = frame.queued;
        if (!frame.data.length) continue;
      }
      const event = JSON.parse(frame.data.join("\n"));
      if (event.type === "error") {  // the gateway's own: the stream expired or fell silent
        if (event.code === "read_timeout") {
          outcome = "retry";
        } else {
          turn.status = "expired";
          outcome = "end";
        }
        break;
      }
      apply(turn, event);
      if (ENDINGS.has(event.type)) {
        outcome = "end";
        break;
      }
    }
    persist(turn);
    renderSoon(turn);
    if (outcome !== null) return outcome;
  }
}

async function follow(turn) {
  if (turn.following || ended(turn) || !turn.id) return;
  turn.following = true;
  let backoff = 250;
  try {
    for (;;) {
      let outcome;
      try {
        outcome = await readOnce(turn);
      } catch (error) {
        if (turn.dropped) return;
        setStatus("Connection lost; resuming…", "reconnecting");
        outcome = "retry";
      }
      if (turn.dropped || outcome !== "retry") break;
      page.reconnects += 1;
      setStatus($("status").textContent, null);
      await new Promise((resolve) => setTimeout(resolve, backoff));
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }
  } finally {
    turn.following = false;
  }
  if (turn.dropped) return;
  persist(turn);
  render(turn);
  if (ended(turn)) {
    const said = { completed: "Done.", cancelled: "Stopped.", expired: "Expired." };
    const state = turn.status === "completed" ? "done" : turn.status;
    setStatus(said[turn.status] || "Ended: " + turn.status + ".", state);
  }
}

async function fetchPrompt(turn) {
  const url = "v1/responses/" + encodeURIComponent(turn.id) + "/input_items?order=asc&limit=100";
  let response;
  try {
    response = await fetch(url, { headers: headers({}), cache: "no-store" });
  } catch (error) {
    return;
  }
  if (response.status === 401) return needToken();
  if (response.status === 404) {
    turn.prompt = "";
    turn.status = "expired";
    return render(turn);
  }
  if (!response.ok) return;
  const texts = [];
  for (const item of (await response.json()).data) {
    if (item.role !== "user") continue;
    const content = typeof item.content === "string" ? [{ text: item.content }] : item.content;
    for (const part of content || []) if (typeof part.text === "string") texts.push(part.text);
  }
  turn.prompt = texts.join("\n");
  persist(turn);
  render(turn);
}

// ---- loading a conversation, sending, stopping ----

function load() {
  const wanted = idsFromHash();
  if (wanted.join(",") === page.ids && page.turns.length) return;
  for (const turn of page.turns) {
    turn.dropped = true;
    if (turn.controller) turn.controller.abort();
  }
  page.turns = [];
  for (const section of document.querySelectorAll(".turn")) section.remove();
  $("intro").hidden = wanted.length > 0;
  for (const id of wanted) newTurn(cached(id) || { id, status: "loading" });
  saveHash();
  resume();
  setStatus(wanted.length ? "Conversation restored." : "Ready.", "idle");
}

function resume() {
  for (const turn of page.turns) {
    if (turn.prompt === null) fetchPrompt(turn);
    if (turn.status === "loading") turn.status = "queued";
    if (!ended(turn)) follow(turn);
  }
}

async function send(event) {
  event.preventDefault();
  const prompt = $("prompt").value;
  const previous = last();
  if (!prompt.trim() || (previous && !ended(previous))) return;
  $("prompt").value = "";
  const turn = newTurn({ prompt, sentAt: Date.now(), status: "queued" });
  setStatus("Enqueueing…", "queued");
  const body = { input: prompt, background: true, store: true };
  const chain = ids();
  if (chain.length) body.previous_response_id = chain[chain.length - 1];
  let response;
  let answer;
  try {
    response = await fetch("v1/responses", {
      method: "POST",
      headers: headers({
        "Content-Type": "application/json",
        "Idempotency-Key": crypto.randomUUID(),
      }),
      body: JSON.stringify(body),
    });
    answer = await response.json();
  } catch (error) {
    response = null;
  }
  if (response === null || response.status === 401) {
    turn.dropped = true;
    turn.el.section.remove();
    page.turns.pop();
    $("prompt").value = prompt;
    buttons();
    if (response === null) return setStatus("Cannot reach the gateway.", "error");
    return needToken();
  }
  if (!response.ok) {
    turn.status = "refused";
    turn.error = { message: (answer.error && answer.error.message) || "HTTP " + response.status };
    render(turn);
    return setStatus("Refused.", "error");
  }
  turn.id = answer.id;
  turn.status = answer.status;
  persist(turn);
  saveHash();
  render(turn);
  setStatus("Queued as " + answer.id + ".", "queued");
  follow(turn);
}

async function stop() {
  const turn = last();
  if (!turn || !turn.id || ended(turn)) return;
  $("stop").disabled = true;
  setStatus("Stopping…", "stopping");
  const url = "v1/responses/" + encodeURIComponent(turn.id) + "/cancel";
  try {
    await fetch(url, { method: "POST", headers: headers({}) });
  } catch (error) {
    setStatus("Cannot reach the gateway to stop it.", "error");
  }
  // The event stream ends with the response.incomplete (status cancelled) the worker causes.
}

function newChat() {
  history.pushState(null, "", location.pathname + location.search);
  load();
  $("prompt").focus();
}

function saveToken(event) {
  event.preventDefault();
  sessionStorage.setItem("streamq-token", $("token").value.trim());
  $("token").value = "";
  $("token-form").hidden = true;
  setStatus("Token saved for this tab.", "idle");
  resume();
}

function keydown(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("prompt-form").requestSubmit();
  }
}

$("prompt-form").addEventListener("submit", send);
$("prompt").addEventListener("keydown", keydown);
$("stop").addEventListener("click", stop);
$("new-chat").addEventListener("click", newChat);
$("token-form").addEventListener("submit", saveToken);
window.addEventListener("popstate", load);
load();
