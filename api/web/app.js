// The tokenrelay page: submit a job, follow its stream, resume after a drop or a reload.
// Public API only: /v1/models, /v1/jobs, /v1/jobs/{id}/stream, /v1/jobs/{id}/cancel, /v1/jobs/{id}/stream-token.
//
// API keys: when the gateway answers 401 the page asks for a key, keeps it in sessionStorage (this tab
// only, never in a URL) and sends it as a bearer token. EventSource cannot send headers, so with a key
// each (re)connection first gets a short-lived stream token for the job, which goes in the stream's URL.
//
// Resume: every event's id and the text so far are kept in sessionStorage together, so a reload
// restores the answer and asks the stream for the events after that id (nothing missing or doubled).
// A dropped connection is resumed by EventSource itself, which sends Last-Event-ID.
"use strict";

const STORE_KEY = "tokenrelay.job";
const API_KEY_STORE = "tokenrelay.key";
const TERMINAL = ["succeeded", "failed", "cancelled"];
const $ = (id) => document.getElementById(id);
// What the answer box says while it holds no text, by job state.
const PLACEHOLDERS = {queued: "Waiting for a worker…", running: "Waiting for the first token…",
                      failed: "No answer: the job failed.", cancelled: "Stopped before the first token.",
                      idle: "The answer streams in here."};

let job = null;      // {id, model, last, parts, tokens, state, submittedAt, firstTokenAt, endedAt}
let source = null;   // the EventSource of the job being followed
let ticker = null;
let apiKey = sessionStorage.getItem(API_KEY_STORE) || "";

class KeyNeeded extends Error {}

// fetch with the key, if any; a 401 asks for a (new) key and throws KeyNeeded.
async function api(path, options = {}) {
  const headers = {...(options.headers || {})};
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const response = await fetch(path, {...options, headers});
  if (response.status === 401) {
    let reason = "";
    try { reason = (await response.json()).error.message; } catch (err) { /* not JSON */ }
    askForKey(apiKey ? `The gateway refused this key (${reason || "401"}). Enter another one.`
                     : "This gateway needs an API key.");
    throw new KeyNeeded(reason);
  }
  return response;
}

function askForKey(message) {
  $("key-form").hidden = false;
  $("key-message").textContent = message;
  $("key-tools").hidden = true;
  $("api-key").focus();
}

async function useKey(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) { $("api-key").focus(); return; }
  apiKey = key;
  sessionStorage.setItem(API_KEY_STORE, key);
  $("api-key").value = "";
  if (await loadModels()) restore();
}

function eventOrder(id) {
  const [attempt, seq] = id.split("-").map(Number);
  return [attempt, seq];
}

function isAfter(id, last) {
  if (!last) return true;
  const [a1, s1] = eventOrder(id), [a2, s2] = eventOrder(last);
  return a1 > a2 || (a1 === a2 && s1 > s2);
}

function save() {
  sessionStorage.setItem(STORE_KEY, JSON.stringify(job));
}

// -- rendering ---------------------------------------------------------------------------------------

function renderAnswer() {
  const answer = $("answer");
  answer.replaceChildren();
  if (!job.parts.length) {
    const p = document.createElement("p");
    p.className = "placeholder";
    p.textContent = PLACEHOLDERS[job.state] || PLACEHOLDERS.idle;
    answer.append(p);
  }
  for (const text of job.parts) appendToken(text);
}

function appendToken(text) {
  const answer = $("answer");
  const placeholder = answer.querySelector(".placeholder");
  if (placeholder) placeholder.remove();
  const span = document.createElement("span");
  span.className = "tok";
  span.textContent = text;
  const atBottom = answer.scrollHeight - answer.scrollTop - answer.clientHeight < 24;
  answer.append(span);
  if (atBottom) answer.scrollTop = answer.scrollHeight;
}

function renderStatus() {
  const status = $("status");
  const state = job ? job.state : "idle";
  status.dataset.state = state;
  $("answer").classList.toggle("streaming", state === "running" || state === "reconnecting");
  $("stop").disabled = !job || TERMINAL.includes(state);
  if (!job) { $("status-text").textContent = "Ready"; return; }
  const now = job.endedAt || Date.now();
  const elapsed = ((now - job.submittedAt) / 1000).toFixed(1);
  const streaming = job.firstTokenAt ? (now - job.firstTokenAt) / 1000 : 0;
  const rate = streaming > 0.05 ? (job.tokens / streaming).toFixed(1) : "–";
  const label = {queued: "Queued", running: "Running", reconnecting: "Reconnecting…", succeeded: "Done",
                 failed: "Failed", cancelled: "Stopped"}[state] || state;
  $("status-text").textContent = `${label} · ${job.tokens} tokens · ${rate} tokens/s · ${elapsed} s`;
  $("answer").dataset.tokens = String(job.tokens);
}

function showJob() {
  $("job").hidden = !job;
  if (!job) return;
  const link = $("job-link");
  link.textContent = job.id;
  link.href = `/v1/jobs/${job.id}/stream`;
}

function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
}

// -- following a job ---------------------------------------------------------------------------------

function track(event) {
  // Drops anything not after the last event we have (never expected; cheap insurance against doubling).
  if (event.lastEventId && !isAfter(event.lastEventId, job.last)) return false;
  if (event.lastEventId) job.last = event.lastEventId;
  return true;
}

function finish(state) {
  job.state = state;
  job.endedAt = job.endedAt || Date.now();
  if (source) { source.close(); source = null; }
  clearInterval(ticker);
  save();
  if (!job.parts.length) renderAnswer();
  renderStatus();
}

async function streamUrl() {
  const after = job.last ? `last_event_id=${encodeURIComponent(job.last)}` : "";
  if (!apiKey) return `/v1/jobs/${job.id}/stream${after ? "?" + after : ""}`;
  const response = await api(`/v1/jobs/${job.id}/stream-token`, {method: "POST"});
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
  $("job-link").href = body.stream_url;
  return body.stream_url + (after ? "&" + after : "");
}

async function follow() {
  if (source) { source.close(); source = null; }
  const following = job;
  let url;
  try {
    url = await streamUrl();
  } catch (err) {
    if (err instanceof KeyNeeded) return;
    if (job === following) explainClosedStream();
    return;
  }
  if (job !== following) return;  // another job was sent meanwhile
  source = new EventSource(url);
  clearInterval(ticker);
  ticker = setInterval(renderStatus, 250);

  source.addEventListener("open", () => {
    if (job.state === "reconnecting") { job.state = job.firstTokenAt ? "running" : "queued"; renderStatus(); }
  });
  source.addEventListener("metadata", (e) => {
    if (!track(e)) return;
    job.state = "running";
    save();
    if (!job.parts.length) renderAnswer();
    renderStatus();
  });
  source.addEventListener("token", (e) => {
    if (!track(e)) return;
    const data = JSON.parse(e.data);
    job.parts.push(data.text);
    job.tokens += data.count || 1;
    job.firstTokenAt = job.firstTokenAt || Date.now();
    job.state = "running";
    save();
    appendToken(data.text);
    renderStatus();
  });
  source.addEventListener("reset", (e) => {
    // The job restarted on another worker: its new attempt starts over.
    if (!track(e)) return;
    job.parts = [];
    job.tokens = 0;
    save();
    renderAnswer();
    renderStatus();
  });
  source.addEventListener("error", (e) => {
    if (e.data) {  // the job's own `error` event
      if (!track(e)) return;
      showError(JSON.parse(e.data).message || "the job failed");
      save();
      return;
    }
    // A connection problem. EventSource retries by itself unless the answer was an HTTP error.
    if (source && source.readyState === EventSource.CLOSED) {
      source = null;
      explainClosedStream();
    } else if (job && !TERMINAL.includes(job.state)) {
      job.state = "reconnecting";
      renderStatus();
    }
  });
  source.addEventListener("end", (e) => {
    if (!track(e)) return;
    finish(JSON.parse(e.data).status);
  });
}

async function explainClosedStream() {
  try {
    const response = await api(`/v1/jobs/${job.id}`);
    const body = await response.json();
    if (!response.ok) { showError(body.error.message); finish("failed"); return; }
  } catch (err) {
    if (err instanceof KeyNeeded) return;
    /* the gateway is away: retry below */
  }
  job.state = "reconnecting";
  renderStatus();
  setTimeout(() => { if (job && !TERMINAL.includes(job.state)) follow(); }, 1000);
}

// -- actions -----------------------------------------------------------------------------------------

async function send(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt) { showError("Write a prompt first: there is nothing to send."); $("prompt").focus(); return; }
  if (source) { source.close(); source = null; }
  showError("");
  const maxTokens = parseInt($("max-tokens").value, 10);
  const body = {model: $("model").value, prompt, params: Number.isFinite(maxTokens) ? {max_tokens: maxTokens} : {}};
  $("send").disabled = true;
  try {
    const response = await api("/v1/jobs", {method: "POST", headers: {"content-type": "application/json"},
                                            body: JSON.stringify(body)});
    const created = await response.json();
    if (!response.ok) { showError(created.error ? created.error.message : `HTTP ${response.status}`); return; }
    job = {id: created.id, model: created.model, last: null, parts: [], tokens: 0, state: "queued",
           submittedAt: Date.now(), firstTokenAt: null, endedAt: null};
    save();
    showJob();
    renderAnswer();
    renderStatus();
    follow();
  } catch (err) {
    if (!(err instanceof KeyNeeded)) showError("cannot reach the gateway");
  } finally {
    $("send").disabled = false;
  }
}

async function stop() {
  if (!job) return;
  $("stop").disabled = true;
  try {
    const response = await api(`/v1/jobs/${job.id}/cancel`, {method: "POST"});
    if (!response.ok) showError((await response.json()).error.message);
  } catch (err) {
    if (!(err instanceof KeyNeeded)) showError("cannot reach the gateway");
  }
  // The stream ends with `end` of status `cancelled`, which updates the page.
}

// True when the gateway answered (with the key, if it needs one).
async function loadModels() {
  const select = $("model");
  try {
    const response = await api("/v1/models");
    const models = (await response.json()).data.map((m) => m.id);
    select.replaceChildren(...models.map((id) => new Option(id, id)));
    const remembered = localStorage.getItem("tokenrelay.model");
    if (remembered && models.includes(remembered)) select.value = remembered;
    $("key-form").hidden = true;
    $("key-message").textContent = "";
    $("key-tools").hidden = !apiKey;
    return true;
  } catch (err) {
    if (!(err instanceof KeyNeeded)) showError("cannot load the models");
    return false;
  }
}

function restore() {
  try { job = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null"); } catch (err) { job = null; }
  if (!job) { renderStatus(); return; }
  showJob();
  renderAnswer();
  renderStatus();
  if (!TERMINAL.includes(job.state)) follow();
}

$("ask").addEventListener("submit", send);
$("key-form").addEventListener("submit", useKey);
$("forget-key").addEventListener("click", (e) => {
  e.preventDefault();
  apiKey = "";
  sessionStorage.removeItem(API_KEY_STORE);
  askForKey("Key forgotten. Enter a key to continue.");
});
$("stop").addEventListener("click", stop);
$("model").addEventListener("change", () => localStorage.setItem("tokenrelay.model", $("model").value));
$("boundaries").addEventListener("change", (e) => $("answer").classList.toggle("show-boundaries", e.target.checked));
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("ask").requestSubmit();
});
loadModels().then((ready) => { if (ready) restore(); });
