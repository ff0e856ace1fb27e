// The streamq chat page: enqueue a prompt, follow the job's events, resume after a drop.
//
// fetch() rather than EventSource: EventSource cannot send an Authorization header. Resuming
// works the same way: every reconnect sends the last processed cursor as Last-Event-ID, and
// the gateway answers with exactly the events after it, so no text is lost or repeated.
"use strict";

const TERMINAL = new Set(["done", "error", "cancelled"]);
const MAX_BACKOFF_MS = 5000;
const $ = (id) => document.getElementById(id);

const page = {
  jobId: null,
  lastEventId: null,
  reconnects: 0,
  controller: null,
};

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

function needToken(message) {
  $("token-form").hidden = false;
  setStatus(message, "auth");
}

// Split an SSE body into frames; returns [frames, rest of the buffer].
function parseFrames(buffer) {
  const frames = [];
  const parts = buffer.replace(/\r\n/g, "\n").split("\n\n");
  const rest = parts.pop();
  for (const part of parts) {
    const frame = { id: null, event: "message", data: [] };
    for (const line of part.split("\n")) {
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") frame.id = value;
      else if (field === "event") frame.event = value;
      else if (field === "data") frame.data.push(value);
    }
    if (frame.data.length) frames.push(frame);
  }
  return [frames, rest];
}

// Apply one event; returns true when the job's stream has ended.
function handle(frame) {
  const data = JSON.parse(frame.data.join("\n"));
  const answer = $("answer");
  switch (frame.event) {
    case "start":
      setStatus("Generating…", "streaming");
      break;
    case "reset":  // a new attempt: what the previous one wrote is void
      answer.textContent = "";
      setStatus("The job restarted on another worker…", "streaming");
      break;
    case "delta":
      if (!data.choice) answer.textContent += data.text;
      break;
    case "done":
      setStatus("Done (" + data.finish_reason + ").", "done");
      break;
    case "error":
      setStatus("Failed: " + data.message, "error");
      break;
    case "cancelled":
      setStatus("Stopped.", "cancelled");
      break;
    case "expired":
      setStatus("The job's stream has expired.", "expired");
      return true;
    default:
      break;  // reasoning, tool calls, keep-alive-only updates, newer event types
  }
  if (frame.id !== null) page.lastEventId = frame.id;
  return TERMINAL.has(frame.event);
}

// One connection: true if the stream ended, false if it should be resumed.
async function readOnce(jobId) {
  const extra = page.lastEventId ? { "Last-Event-ID": page.lastEventId } : {};
  page.controller = new AbortController();
  const response = await fetch("v1/jobs/" + encodeURIComponent(jobId) + "/events", {
    headers: headers(extra),
    signal: page.controller.signal,
    cache: "no-store",
  });
  if (response.status === 204) return true;
  if (response.status === 401) {
    needToken("The gateway needs a token.");
    return true;
  }
  if (!response.ok) {
    setStatus("Cannot follow the job (HTTP " + response.status + ").", "error");
    return true;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;  // cut before the terminal event: resume
    buffer += decoder.decode(value, { stream: true });
    const [frames, rest] = parseFrames(buffer);
    buffer = rest;
    for (const frame of frames) {
      if (page.jobId !== jobId) return true;
      if (handle(frame)) return true;
    }
  }
}

async function follow(jobId) {
  let backoff = 250;
  for (;;) {
    let ended = false;
    try {
      ended = await readOnce(jobId);
      backoff = 250;
    } catch (error) {
      if (page.jobId !== jobId) return;
      setStatus("Connection lost; resuming…", "reconnecting");
    }
    if (ended || page.jobId !== jobId) break;
    page.reconnects += 1;
    setStatus($("status").textContent, null);
    await new Promise((resolve) => setTimeout(resolve, backoff));
    backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
  }
  if (page.jobId === jobId) {
    $("stop").disabled = true;
    $("send").disabled = false;
  }
}

async function send(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt) return;
  $("answer").textContent = "";
  $("send").disabled = true;
  setStatus("Enqueueing…", "queued");
  let response;
  try {
    response = await fetch("v1/jobs", {
      method: "POST",
      headers: headers({
        "Content-Type": "application/json",
        "Idempotency-Key": crypto.randomUUID(),
      }),
      body: JSON.stringify({ messages: [{ role: "user", content: prompt }] }),
    });
  } catch (error) {
    setStatus("Cannot reach the gateway.", "error");
    $("send").disabled = false;
    return;
  }
  const body = await response.json();
  if (response.status === 401) {
    $("send").disabled = false;
    return needToken("The gateway needs a token.");
  }
  if (!response.ok) {
    $("send").disabled = false;
    return setStatus("Refused: " + body.error.message, "error");
  }
  page.jobId = body.id;
  page.lastEventId = null;
  page.reconnects = 0;
  $("answer").dataset.jobId = body.id;
  $("stop").disabled = false;
  setStatus("Queued as " + body.id + ".", "queued");
  follow(body.id);
}

async function stop() {
  if (!page.jobId) return;
  $("stop").disabled = true;
  await fetch("v1/jobs/" + encodeURIComponent(page.jobId), {
    method: "DELETE",
    headers: headers({}),
  });
  // The event stream ends with the `cancelled` event the worker writes.
}

function saveToken(event) {
  event.preventDefault();
  sessionStorage.setItem("streamq-token", $("token").value.trim());
  $("token").value = "";
  $("token-form").hidden = true;
  setStatus("Token saved for this tab.", "idle");
}

$("prompt-form").addEventListener("submit", send);
$("stop").addEventListener("click", stop);
$("token-form").addEventListener("submit", saveToken);
