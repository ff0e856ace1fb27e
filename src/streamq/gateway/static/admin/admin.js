// The streamq operators' page: polls /admin/api/overview (every 2 s) and /admin/api/history
// (every 15 s) with the admin token, draws the last hour with uPlot, follows one job's events
// and cancels jobs. No inline script (the page's CSP forbids it); no data in the HTML itself.
"use strict";

const OVERVIEW_EVERY_MS = 2000;
const HISTORY_EVERY_MS = 15000;
const TOKEN_KEY = "streamq-admin-token";
const ENDED = new Set(["done", "error", "cancelled"]);
const COLORS = ["#2f6fdf", "#d9482b", "#7a4fc9", "#1f9d55", "#d98e04", "#0f9bb3", "#b83280", "#5f6b7a"];
const OUTCOME_COLORS = { done: "#1f9d55", error: "#d9482b", cancelled: "#7a4fc9" };
const $ = (id) => document.getElementById(id);

const state = { charts: {}, stream: null, timers: [], ended: null };

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function api(path, options) {
  const init = Object.assign({ cache: "no-store" }, options || {});
  init.headers = Object.assign({ Authorization: "Bearer " + token() }, init.headers || {});
  const response = await fetch("admin/api/" + path, init);
  if (response.status === 401 || response.status === 403) {
    const body = await response.json().catch(() => ({}));
    const message = (body.error && body.error.message) || "HTTP " + response.status;
    askToken(response.status === 403 ? "Not an operator's token: " + message : message);
    throw new Error("unauthorized");
  }
  return response;
}

function askToken(message) {
  state.timers.forEach(clearInterval);
  state.timers = [];
  $("board").hidden = true;
  $("token-form").hidden = false;
  $("token-error").textContent = message || "";
  setRefresh("Needs an operator token.", "auth");
}

function setRefresh(text, kind) {
  $("refresh").textContent = text;
  $("refresh").dataset.state = kind;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function fill(tableId, rows, columns, emptyText) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren();
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell(tr, emptyText, "empty");
    td.colSpan = columns;
    body.appendChild(tr);
  }
  return body;
}

function seconds(value, digits) {
  if (value === null || value === undefined) return "–";
  if (value >= 3600) return (value / 3600).toFixed(1) + " h";
  if (value >= 60) return (value / 60).toFixed(1) + " min";
  return value.toFixed(digits === undefined ? 2 : digits) + " s";
}

function sum(mapping) {
  return Object.values(mapping || {}).reduce((a, b) => a + b, 0);
}

function showStats(stats, now) {
  $("queued").textContent = String(stats.queued);
  $("oldest").textContent = stats.oldest_queued_age_s === null ? "–" : seconds(stats.oldest_queued_age_s, 1);
  $("running").textContent = String(stats.running);
  $("workers-alive").textContent = String(stats.workers.length);
  $("in-flight").textContent = String(stats.workers.reduce((n, w) => n + w.in_flight, 0));
  $("jobs-per-minute").textContent = stats.jobs_per_minute.toFixed(2);
  $("deltas-per-second").textContent = stats.deltas_per_second.toFixed(2);
  $("failures-total").textContent = String(sum(stats.failures));
  $("failures-total").dataset.codes = JSON.stringify(stats.failures);
  const outcomes = Object.keys(stats.jobs).sort().map((k) => k + " " + stats.jobs[k]).join(", ");
  $("window-note").textContent = "Last " + Math.round(stats.window_s) + " s: " + (outcomes || "no jobs ended") + ".";
  $("window-note").dataset.jobs = JSON.stringify(stats.jobs);
  const body = fill("workers", stats.workers, 5, "no live worker");
  for (const w of stats.workers) {
    const tr = document.createElement("tr");
    tr.dataset.workerId = w.id;
    cell(tr, w.id);
    cell(tr, w.host);
    cell(tr, w.version);
    cell(tr, w.in_flight + " / " + w.concurrency, "num");
    cell(tr, seconds(Math.max(0, now - w.started_at), 0), "num");
    body.appendChild(tr);
  }
}

function showAdmission(admission) {
  const body = fill("admission", admission, 4, "no model limits in use (STREAMQ_MODEL_LIMITS)");
  for (const a of admission) {
    const tr = document.createElement("tr");
    cell(tr, a.model);
    cell(tr, a.account);
    cell(tr, a.slots_in_use, "num");
    cell(tr, a.paused_for_s === null ? "–" : "paused " + seconds(a.paused_for_s, 1));
    body.appendChild(tr);
  }
}

function usageText(usage) {
  if (!usage) return "–";
  return (usage.prompt_tokens ?? "?") + " → " + (usage.completion_tokens ?? "?") + " tokens";
}

function showJobs(jobs) {
  const body = fill("jobs", jobs, 10, "no running, queued or recent job");
  for (const job of jobs) {
    const tr = document.createElement("tr");
    tr.dataset.jobId = job.job_id;
    tr.dataset.state = job.state;
    if (state.stream && state.stream.jobId === job.job_id) tr.className = "selected";
    cell(tr, job.job_id.length > 20 ? job.job_id.slice(0, 20) + "…" : job.job_id).title = job.job_id;
    const badge = document.createElement("span");
    badge.className = "state state-" + job.state;
    badge.textContent = job.state + (job.error ? " (" + job.error.code + ")" : "");
    cell(tr, "").replaceChildren(badge);
    cell(tr, job.model);
    cell(tr, job.tenant);
    cell(tr, job.attempts, "num");
    cell(tr, seconds(job.ttft_s, 3), "num");
    cell(tr, seconds(job.duration_s, 2), "num");
    cell(tr, job.deltas, "num");
    cell(tr, usageText(job.usage));
    const actions = cell(tr, "");
    if (!ENDED.has(job.state)) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "cancel";
      button.textContent = "Cancel";
      button.addEventListener("click", (event) => {
        event.stopPropagation();
        cancelJob(job.job_id, button);
      });
      actions.replaceChildren(button);
    }
    tr.addEventListener("click", () => openStream(job.job_id));
    body.appendChild(tr);
  }
}

async function cancelJob(jobId, button) {
  button.disabled = true;
  try {
    const response = await api("jobs/" + encodeURIComponent(jobId) + "/cancel", { method: "POST" });
    const body = await response.json();
    button.textContent = body.outcome || "HTTP " + response.status;
  } catch (error) {
    button.disabled = false;
  }
}

// --- charts --------------------------------------------------------------------------------

function chartWidth(id) {
  return Math.max(280, $(id).clientWidth || 400);
}

// Points only where something happened: a quiet hour stays a flat line.
function nonZero(u, seriesIndex, show) {
  const values = u.data[seriesIndex];
  return show ? values.map((v, i) => (v ? i : -1)).filter((i) => i >= 0) : null;
}

function draw(id, times, series) {
  const names = Object.keys(series).sort();
  const signature = names.join(",");
  const data = [times, ...names.map((n) => series[n])];
  if (!names.length) data.push(times.map(() => 0));  // the "none yet" line
  const existing = state.charts[id];
  if (existing && existing.signature === signature) {
    existing.plot.setData(data);
    return;
  }
  if (existing) existing.plot.destroy();
  const opts = {
    width: chartWidth(id),
    height: 190,
    legend: { live: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
    series: [{}].concat(names.map((name, i) => ({
      label: name,
      stroke: OUTCOME_COLORS[name] || COLORS[i % COLORS.length],
      width: 2,
      fill: (OUTCOME_COLORS[name] || COLORS[i % COLORS.length]) + "22",
      points: { show: true, size: 6, filter: nonZero },
    }))),
    axes: [{}, { size: 44 }],
  };
  if (!names.length) opts.series.push({ label: "none yet", stroke: "#bbb" });
  $(id).replaceChildren();
  state.charts[id] = { signature, plot: new uPlot(opts, data, $(id)) };
}

async function refreshHistory() {
  const response = await api("history");
  if (!response.ok) return;
  const { minutes } = await response.json();
  const times = minutes.map((m) => m.minute * 60);
  const jobs = {};
  const failures = {};
  for (const [i, m] of minutes.entries()) {
    for (const [name, n] of Object.entries(m.jobs)) (jobs[name] ||= times.map(() => 0))[i] = n;
    for (const [code, n] of Object.entries(m.errors)) (failures[code] ||= times.map(() => 0))[i] = n;
  }
  draw("chart-jobs", times, jobs);
  draw("chart-failures", times, failures);
  draw("chart-deltas", times, { "deltas/s": minutes.map((m) => m.deltas / 60) });
}

// --- overview ------------------------------------------------------------------------------

async function refreshOverview() {
  try {
    const response = await api("overview");
    if (!response.ok) throw new Error("HTTP " + response.status);
    const overview = await response.json();
    showStats(overview.stats, overview.server_time);
    const ended = JSON.stringify([overview.stats.jobs, overview.stats.failures]);
    if (ended !== state.ended) {  // a job ended since the last look: redraw the hour now
      state.ended = ended;
      refreshHistory().catch(() => {});
    }
    showAdmission(overview.admission);
    showJobs(overview.jobs);
    setRefresh("Updated " + new Date().toLocaleTimeString() + " · every " + OVERVIEW_EVERY_MS / 1000 + " s", "live");
  } catch (error) {
    if (error.message !== "unauthorized") setRefresh("Refresh failed: " + error.message, "error");
  }
}

// --- one job's stream ----------------------------------------------------------------------

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

function streamStatus(text, kind) {
  $("stream-status").textContent = text;
  $("stream-status").dataset.state = kind;
}

function apply(stream, frame) {
  const data = JSON.parse(frame.data.join("\n"));
  if (frame.id !== null) stream.cursor = frame.id;
  switch (frame.event) {
    case "start": streamStatus("Running (attempt " + data.attempt + ").", "running"); break;
    case "reset": $("stream-text").textContent = ""; streamStatus("Started over.", "running"); break;
    case "delta": if (!data.choice) $("stream-text").textContent += data.text; break;
    case "done": streamStatus("Done (" + data.finish_reason + ").", "done"); return true;
    case "error": streamStatus("Error " + data.code + ": " + data.message, "error"); return true;
    case "cancelled": streamStatus("Cancelled.", "cancelled"); return true;
    case "expired": streamStatus("The stream has expired.", "expired"); return true;
    default: break;
  }
  return false;
}

async function follow(stream) {
  for (let tries = 0; tries < 50 && state.stream === stream; tries++) {
    const headers = stream.cursor ? { "Last-Event-ID": stream.cursor } : {};
    let response;
    try {
      response = await api("jobs/" + encodeURIComponent(stream.jobId) + "/events",
        { headers, signal: stream.controller.signal });
    } catch (error) {
      return;
    }
    if (response.status === 204) {
      if (!stream.cursor) streamStatus("The job had already ended.", "ended");
      return;
    }
    if (!response.ok) {
      streamStatus("Cannot follow the job (HTTP " + response.status + ").", "error");
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        const [frames, rest] = parseFrames(buffer);
        buffer = rest;
        for (const frame of frames) if (apply(stream, frame)) return;
      }
    } catch (error) {
      if (state.stream !== stream) return;
    }
  }
}

function openStream(jobId) {
  closeStream();
  const stream = { jobId, cursor: null, controller: new AbortController() };
  state.stream = stream;
  $("stream").hidden = false;
  $("stream-job").textContent = jobId;
  $("stream-text").textContent = "";
  streamStatus("Connecting…", "connecting");
  for (const tr of document.querySelectorAll("#jobs tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.jobId === jobId);
  }
  follow(stream);
}

function closeStream() {
  if (state.stream) state.stream.controller.abort();
  state.stream = null;
  $("stream").hidden = true;
}

// --- start ---------------------------------------------------------------------------------

function start() {
  $("token-form").hidden = true;
  $("board").hidden = false;
  refreshOverview();
  refreshHistory().catch(() => {});
  state.timers.push(setInterval(refreshOverview, OVERVIEW_EVERY_MS));
  state.timers.push(setInterval(() => refreshHistory().catch(() => {}), HISTORY_EVERY_MS));
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    start();
  });
  $("stream-close").addEventListener("click", closeStream);
  if (token()) start();
  else askToken("");
});
