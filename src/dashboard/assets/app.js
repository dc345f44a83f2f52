// runyard's dashboard: a client of the public API, nothing more (src/dashboard/mod.rs).
// No framework and no build step: DOM helpers, a hash router, one live event stream.

const TERMINAL = new Set(["SUCCESS", "ERROR", "TIMEOUT", "CANCELLED"]);
const STATUSES = ["WAITING", "SCHEDULED", "QUEUED", "STARTING", "RUNNING", "SUCCESS", "ERROR", "TIMEOUT", "CANCELLED"];
const main = document.getElementById("main");
const live = document.getElementById("live");

// ---------------------------------------------------------------- API and auth

const auth = {
  get token() { return sessionStorage.getItem("runyard.token") || ""; },
  set token(t) { t ? sessionStorage.setItem("runyard.token", t) : sessionStorage.removeItem("runyard.token"); },
  // What the token may do; null until known (no [auth]: everything).
  scopes: null,
  // The token may not read (`GET /async/whoami` needs `jobs:read`, 403): the pages list nothing.
  readless: false,
  can(scope) { return this.scopes === null || this.scopes.includes("admin") || this.scopes.includes(scope); },
};

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const token = auth.token; // the credential this request carries
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : jsonStringify(body) });
  const text = await r.text();
  let data = null;
  try { data = text ? parseJson(text) : null; } catch { data = { raw: text }; }
  if (!r.ok) {
    const e = (data && data.error) || {};
    // Only a refusal of the credential in use asks to sign in: one of an older token (a request
    // still going when the user signed in again) must not end the page the new one opened.
    if (r.status === 401 && token === auth.token) { signIn(e.message || "This server needs a token."); }
    throw new ApiError(r.status, e.code || `http_${r.status}`, e.message || r.statusText);
  }
  return data;
}

// The members of a job a table row shows (jobRow): listings ask for these only (`fields`), not
// for whole jobs, whose args, result and runs may each be a megabyte (and a page of whole jobs
// ends at 4 MiB: a few rows).
const ROW_FIELDS = "id,type,status,attempt,max_attempts,updated_at";

// Up to `want` jobs of `GET /async/jobs` with `params` (filters, `fields`), newest first,
// following `next_cursor` for at most `pages` pages of at most 100; `more`: the listing went on
// past what was read (it may hold no more jobs: a full page has a cursor too).
async function listJobs(params, want, pages) {
  const jobs = [];
  let cursor = null;
  for (let i = 0; i < pages && jobs.length < want; i++) {
    const q = new URLSearchParams(params);
    q.set("limit", String(Math.min(100, want - jobs.length)));
    if (cursor) q.set("cursor", cursor);
    const page = await api(`/async/jobs?${q}`);
    jobs.push(...page.jobs);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return { jobs, more: !!cursor };
}

// `read` one at a time: a call while one runs asks for one more read when it ends (an answer
// never lands after a newer one, and a change during a read is read again); at most one waits.
// `stopped()`: no more reads (the page was left).
function oneAtATime(read, stopped = () => false) {
  let busy = false, again = false;
  return async () => {
    if (busy) { again = true; return; }
    busy = true;
    try {
      do { again = false; await read(); } while (again && !stopped());
    } finally { busy = false; }
  };
}

// Asks the server what the token grants; false when a (valid) token is needed first.
async function loadScopes() {
  try {
    const who = await api("/async/whoami");
    auth.scopes = who.scopes || [];
    auth.readless = false;
  } catch (e) {
    if (e.status === 401) return false;
    auth.readless = e.status === 403;
    // 403: the token lacks `jobs:read` (whoami needs it), so it can read nothing here: no action
    // on jobs is offered. Sending a signal needs `signals:write` only: the server is asked with a
    // write it refuses whatever the token (a key with a control character: 422 with the scope,
    // 403 without; nothing written). Any other failure is a server without /async/whoami: every
    // action is offered; the server still decides, and a refusal shows its message.
    auth.scopes = e.status === 403 ? await api("/async/signals/%01", { method: "POST", body: {} })
      .then(() => [], (w) => (w.status === 422 ? ["signals:write"] : [])) : null;
  }
  document.getElementById("signout").hidden = !auth.token;
  return true;
}

function signIn(message) {
  // The page on screen goes, and with it what it started (its polls, listeners and timers, as on
  // a navigation): they would go on asking with a credential the server refuses.
  if (navigation) navigation.abort();
  // Nobody is signed in while the form shows: "Sign out" stayed over it (a 401 ended loadScopes()
  // before it hid the button; probe s53a, F10).
  document.getElementById("signout").hidden = true;
  if (document.getElementById("signin")) return;
  main.replaceChildren(h("section", { id: "signin", class: "card narrow" },
    h("h1", {}, "Sign in"),
    h("p", {}, message),
    h("form", { onsubmit: (ev) => {
        ev.preventDefault();
        const token = ev.target.token.value.trim();
        const bad = unsendable(token);
        if (bad) return setText(document.getElementById("signin-error"), bad);
        settle();
        auth.token = token; start();
      } },
      h("label", { for: "token" }, "API token"),
      h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true }),
      h("p", { id: "signin-error", class: "error", role: "alert" }),
      h("button", { type: "submit" }, "Sign in"))));
}

// Why a pasted token cannot be sent (fetch refuses a header value with a character past U+00FF or
// a control character: the page would be left half signed in), or "" when it can. The character
// is named by its code point only: the token is a secret.
function unsendable(token) {
  const i = [...token].findIndex((c) => c.codePointAt(0) > 0xff || /[\u0000-\u001f\u007f]/.test(c));
  if (i < 0) return "";
  const c = [...token][i].codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
  return `This token cannot be sent: character ${i + 1} (U+${c}) is not one an HTTP header can carry. API tokens and JWTs are plain ASCII: paste the token again.`;
}

// An action (a button or form that sends a request: cancel, retry, pause, resume, trigger, send,
// the bulk retries and cancels): `fn` runs on its click or submit and gets the event; its button
// (a form's submit button) is disabled while it runs. A double click sends the action once, and
// nothing else. After an action the page draws its buttons again, and where the one clicked was
// there may now be the opposite action's (Cancel becomes Retry, Retry Cancel, Pause Resume), the
// same action's anew (Trigger, Send), or another control (Copy, a link), enabled: the second
// click of a double click lands on it. So a click within SPOT_PX (TOUCH_PX for a finger's tap)
// of where an action was clicked is ignored, whatever it lands on, while that action runs on the
// page on screen and for SETTLE_MS after it ended (longer than a double click: 500 ms is the
// usual system setting). A click elsewhere (another row's action) is taken at once, and one at
// the same spot a second later is a new one. A page left while its action runs (its request may
// hang) does not hold the spot on the next page. A click made with the keyboard (Enter, Space:
// `detail` 0, at 0,0 in Chromium and Firefox) has no spot: it holds none and none holds it.
// The second click of what the browser counts as a double click (`detail` 2 or more) is ignored
// further off, within DOUBLE_PX of the spot held: Chromium counts a second tap up to ~20 px away
// as a double tap, and on a phone one that drifted 17-20 px got past TOUCH_PX to what the page
// drew there (probe s53a F8: the dead letters' Newer where Older was, Trigger below Pause).
const SETTLE_MS = 600;
const SPOT_PX = 8;
const TOUCH_PX = 16;
const DOUBLE_PX = 40;
const clickGuard = { last: null, spot: null, running: null, until: 0 };
document.addEventListener("click", (ev) => {
  if (ev.detail === 0) { clickGuard.last = null; return; }
  const s = clickGuard.spot;
  const held = (clickGuard.running && clickGuard.running === navigation) || performance.now() < clickGuard.until;
  const near = s && Math.hypot(ev.clientX - s.x, ev.clientY - s.y);
  if (s && held && near <= (ev.detail >= 2 ? DOUBLE_PX : Math.max(s.r, ev.pointerType === "touch" ? TOUCH_PX : SPOT_PX))) {
    ev.preventDefault();
    ev.stopImmediatePropagation();
    return;
  }
  clickGuard.last = { x: ev.clientX, y: ev.clientY, r: ev.pointerType === "touch" ? TOUCH_PX : SPOT_PX, t: performance.now() };
}, true);
// The spot of the click that is being handled (none for a keyboard's, or when no click led here).
function clickedSpot() {
  const l = clickGuard.last;
  return l && performance.now() - l.t < 100 ? l : null;
}
// A click at the spot of the last click is ignored for SETTLE_MS from now (the sign-in form: the
// page it opens may draw an action under the second click).
function settle() {
  Object.assign(clickGuard, { spot: clickedSpot(), running: null, until: performance.now() + SETTLE_MS });
}
// `turns`: the action turns the page (a pager's buttons: a history change route() follows, and
// `fn` ends once the new page is drawn): the page it leads to holds the spot (route() hands it
// over), while it loads and SETTLE_MS after; any other page left meanwhile still does not.
function once(fn, turns = false) {
  return async (ev) => {
    const el = ev.currentTarget;
    const button = el.tagName === "FORM" ? el.querySelector("button[type=submit]") : el;
    if (ev.type === "submit") ev.preventDefault();
    if (button.disabled) return;
    // The spot: this click's (a form's: its submit button's click, which comes just before).
    const spot = clickedSpot();
    Object.assign(clickGuard, { spot, running: navigation, until: 0, turns: turns ? navigation : null });
    button.disabled = true;
    try { await fn(ev); } finally {
      button.disabled = false;
      // Settles on the page it was clicked on (or turned to) only: one left meanwhile does not
      // hold the next.
      if (clickGuard.spot === spot) {
        Object.assign(clickGuard, clickGuard.running === navigation
          ? { running: null, until: performance.now() + SETTLE_MS, turns: null } : { spot: null, running: null, until: 0, turns: null });
      }
    }
  };
}

// The page route() is drawing: a pager's "Newer" (history.back(), whose hashchange starts it)
// waits for it. Resolves when it is drawn or superseded.
let drawing = Promise.resolve();
const BACK_MS = 5000;
function turnBack() {
  return new Promise((r) => {
    // The hashchange listener registered first (route) has started the new page's draw by then;
    // a back that changes nothing (no hashchange) ends after BACK_MS rather than never, its
    // listener removed (SETTLE_MS, before: a busy browser's late hashchange ended the action
    // before the page was turned, and the next page held no spot: review rev53c).
    const changed = () => { clearTimeout(t); drawing.then(r); };
    const t = setTimeout(() => { window.removeEventListener("hashchange", changed); r(); }, BACK_MS);
    window.addEventListener("hashchange", changed, { once: true });
    history.back();
  });
}

document.getElementById("signout").addEventListener("click", () => {
  auth.token = "";
  // The stream opened with the token ends with it: it would go on reading with its rights.
  stopActivity();
  if (streamAbort) { streamAbort.abort(); streamAbort = null; }
  live.textContent = "signed out"; live.className = "live off"; live.title = "";
  location.hash = "#/";
  start();
});

// ---------------------------------------------------------------- DOM helpers

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    // Text a person reads (a tooltip, a saved file's name) in the order written, as below.
    else if (k === "title" || k === "download") el.setAttribute(k, shown(String(v)));
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : shown(String(c)));
  return el;
}

// Text as written: the Unicode bidirectional controls (U+202A-U+202E, U+2066-U+2069, U+200E,
// U+200F, U+061C) and the C1 controls would show text in another order than written, or hide
// it; they are shown as `\u{...}` escapes, as the CLI prints them (src/logging.rs). Every text
// the page shows goes through here (h() and setText()).
const HIDDEN = /[\u007f-\u009f\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]/g;
function shown(s) { return s.replace(HIDDEN, (c) => `\\u{${c.codePointAt(0).toString(16)}}`); }
function setText(el, s) { el.textContent = shown(String(s)); }
// JSON text with those characters as JSON's own escapes (`\u202e`): shown in the order written,
// and still the same JSON when copied (an integer past 2^53 too: its digits, json.js).
function jsonText(v, indent) {
  return jsonStringify(v, indent).replace(HIDDEN, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function badge(status) { return h("span", { class: `badge s-${(status || "").toLowerCase()}`, "data-status": status }, status || "?"); }

function when(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  return isNaN(d) ? ts : d.toLocaleString();
}

function ago(ts) {
  if (!ts) return "";
  const s = Math.round((Date.now() - new Date(ts)) / 1000);
  if (Math.abs(s) < 60) return s >= 0 ? `${s} s ago` : `in ${-s} s`;
  const m = Math.round(s / 60);
  if (Math.abs(m) < 60) return m >= 0 ? `${m} min ago` : `in ${-m} min`;
  const hr = Math.round(m / 60);
  return hr >= 0 ? `${hr} h ago` : `in ${-hr} h`;
}

function toast(msg) {
  const t = document.getElementById("toast");
  setText(t, msg); t.hidden = false;
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { t.hidden = true; }, 6000);
}

// A log line's time: microseconds since the epoch (the API's `ts`), shown as local hh:mm:ss.mmm.
function logTime(ts) {
  if (typeof ts !== "number") return "";
  const d = new Date(ts / 1000);
  return isNaN(d) ? "" : d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function json(v) { return h("pre", { class: "json" }, jsonText(v, 2)); }

// ---------------------------------------------------------------- live events

// One stream for the whole page: the global event stream, read with fetch (headers, not URLs,
// carry the token) and parsed as Server-Sent Events; reconnects from the last id it saw.
const listeners = new Set();
let lastEventId = null;
let streamAbort = null;

// `from`: the id to go on after (undefined: from the oldest event the store keeps).
async function follow(from) {
  if (streamAbort) streamAbort.abort();
  lastEventId = from || null;
  const ctl = new AbortController();
  streamAbort = ctl;
  for (let backoff = 500; !ctl.signal.aborted; backoff = Math.min(backoff * 2, 10000)) {
    try {
      const headers = { Accept: "text/event-stream" };
      const token = auth.token;
      if (token) headers.Authorization = `Bearer ${token}`;
      if (lastEventId) headers["Last-Event-ID"] = lastEventId;
      const r = await fetch("/async/events/sse", { headers, signal: ctl.signal });
      // Refused, not failed: retrying cannot help. An expired or revoked credential (the server
      // also ends a stream when its JWT expires, and the reconnect lands here) asks to sign in
      // again; a token without `jobs:read` simply has no live updates.
      if (r.status === 401 || r.status === 403) {
        let message = "";
        try { message = ((await r.json()).error || {}).message || ""; } catch { /* not JSON */ }
        // A stream replaced meanwhile (signed in again), or refused for an older token, says nothing
        // about the page on screen.
        if (ctl.signal.aborted || token !== auth.token) return;
        if (streamAbort === ctl) streamAbort = null;
        live.className = "live off";
        if (r.status === 401) {
          live.textContent = "signed out";
          signIn(`Your sign-in ended (${message || "the token is no longer accepted"}): sign in again.`);
        } else {
          live.textContent = "no live updates";
          live.title = shown(String(message));
          tallyUnavailable(message || "the event stream is refused");
          tallyNotLive(message || "the event stream is refused");
        }
        return;
      }
      if (!r.ok || !r.body) throw new Error(`events: HTTP ${r.status}`);
      live.textContent = "live"; live.className = "live on"; live.title = "";
      backoff = 500;
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
          let id = null, data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("id:")) id = line.slice(3).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (id) lastEventId = id;
          if (data) { try { const ev = parseJson(data); listeners.forEach((f) => f(ev)); } catch { /* a comment or keep-alive */ } }
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    live.textContent = "reconnecting…"; live.className = "live off";
    await new Promise((r) => setTimeout(r, backoff));
  }
}

function onEvent(f) { listeners.add(f); return () => listeners.delete(f); }

// ---------------------------------------------------------------- pages

// Each navigation has its own AbortController (route() makes it, the next navigation aborts
// it). A page gets its signal: after each wait it returns if the signal was aborted (the user went
// elsewhere meanwhile), so it neither replaces the page now on screen nor starts a listener or a
// timer; what it starts it stops on the signal's abort (whenLeft).
let navigation = null;
function whenLeft(signal, stop) { signal.addEventListener("abort", stop, { once: true }); }

async function overview(signal) {
  const counts = h("div", { class: "cards", id: "counts" }, h("p", {}, "loading…"));
  const dead = deadLetterCount();
  const recent = h("tbody", { id: "recent" });
  const runners = h("div", { id: "runners" });
  const chart = throughputChart();
  // The chart redraws on the tally's changes and every minute from now: stopped whenever the page
  // goes, even during its first load.
  whenLeft(signal, () => { chart.stop(); dead.stop(); });
  const leases = leaseHolders();
  main.replaceChildren(
    h("h1", {}, "Overview"),
    counts, dead.el,
    h("section", { class: "card", "aria-labelledby": "h-throughput" }, h("h2", { id: "h-throughput" }, "Throughput and failures, last hour"), chart.el),
    h("div", { class: "grid" },
      h("section", { class: "card" }, h("h2", {}, "Runners"), runners),
      h("section", { class: "card" }, h("h2", {}, "Nodes holding leases"), leases.el)),
    h("section", { class: "card" }, h("h2", {}, "Latest jobs"),
      h("table", { class: "jobs" }, h("thead", {}, h("tr", {}, h("th", {}, "Job"), h("th", {}, "Type"), h("th", {}, "Status"), h("th", {}, "Attempt"), h("th", {}, "Updated"))), recent)));

  async function refreshCounts() {
    try {
      const s = await api("/async/stats");
      counts.replaceChildren(...STATUSES.map((st) =>
        h("a", { class: "count", href: `#/jobs?status=${st}`, "data-count": st },
          h("span", { class: "n" }, String((s.by_status || {})[st] || 0)), badge(st))));
      if (s.queues && s.queues.length) {
        counts.append(h("div", { class: "scroll" }, h("table", { class: "queues" },
          h("thead", {}, h("tr", {}, h("th", {}, "Type"), h("th", {}, "Queued"), h("th", {}, "Oldest waiting"))),
          h("tbody", {}, s.queues.map((q) => h("tr", {}, h("td", {}, q.type), h("td", {}, q.depth), h("td", {}, q.oldest ? ago(q.oldest) : "")))))));
      }
    } catch (e) {
      counts.replaceChildren(h("p", { class: "muted" }, `Counts are not available from this server (${e.message}).`));
    }
  }
  async function refreshRunners() {
    try {
      const r = await api("/async/runners");
      runners.replaceChildren(h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, "Runner"), h("th", {}, "Kind"), h("th", {}, "Types"), h("th", {}, "In use"))),
        h("tbody", {}, (r.runners || []).map((x) => h("tr", {},
          h("td", {}, x.name), h("td", {}, x.kind), h("td", {}, (x.types || []).join(", ")),
          h("td", {}, x.in_use === undefined || x.in_use === null ? `of ${x.concurrency}` : `${x.in_use} / ${x.concurrency}`))))));
    } catch (e) {
      runners.replaceChildren(h("p", { class: "muted" }, `Runners are not listed by this server (${e.message}).`));
    }
  }
  async function refreshRecent() {
    const { jobs } = await listJobs({ fields: ROW_FIELDS }, 20, 3);
    recent.replaceChildren(...jobs.map((j) => jobRow(j)));
  }
  await Promise.all([refreshCounts(), refreshRunners(), refreshRecent().catch((e) => toast(e.message)), dead.refresh(), activityReady]);
  if (signal.aborted) return;
  leases.refresh();
  // Each panel reads one at a time (a slow read must not put older data back after a newer one).
  const left = () => signal.aborted;
  const rereads = [refreshCounts, refreshRunners, () => refreshRecent().catch(() => {})].map((f) => oneAtATime(f, left));
  let pending = null;
  const off = onEvent((ev) => {
    if (changesDeadLetters(ev)) dead.later();
    // Only a status event (a job submitted, or one changing status) or a resync can change what
    // the panels show; progress events (a job may send several a second) do not re-read them.
    if (ev.type !== "status" && ev.type !== "resync") return;
    // Many events can arrive at once: refresh at most every 500 ms (the leases at most every
    // LEASE_EVERY_MS).
    if (pending) return;
    pending = setTimeout(() => { pending = null; rereads.forEach((f) => f()); leases.later(); }, 500);
  });
  whenLeft(signal, () => { off(); clearTimeout(pending); leases.stop(); });
}

function jobRow(j, selectable) {
  return h("tr", { "data-job": j.id, "data-updated": j.updated_at },
    selectable ? h("td", {}, h("input", { type: "checkbox", class: "pick", value: j.id, "aria-label": `select ${j.id}` })) : null,
    h("td", {}, h("a", { href: `#/job/${j.id}`, class: "mono" }, j.id.slice(0, 8) + "…")),
    h("td", {}, j.type),
    h("td", {}, badge(j.status)),
    h("td", {}, `${j.attempt}/${j.max_attempts}`),
    h("td", { title: j.updated_at }, ago(j.updated_at)));
}

// A status event on a table's row (its 4th cell): not when the row shows a newer state already,
// that is when the job's `updated_at` the row was drawn from (or the last event applied) is later
// than the event's `ts` (an event that came before a re-read the row is from). `during`: the
// loads on their way, each keeping the events that come meanwhile to apply them to its rows.
function liveStatus(body, ev, during) {
  if (!ev.job_id || !ev.runyard_status) return;
  during.forEach((d) => d.push(ev));
  const row = body.querySelector(`tr[data-job="${CSS.escape(ev.job_id)}"]`);
  if (!row || Date.parse(ev.ts) < Date.parse(row.dataset.updated)) return; // NaN: applied
  if (ev.ts) row.dataset.updated = ev.ts;
  row.children[3].replaceChildren(badge(ev.runyard_status));
}

// Filters the list API applies in the store (`GET /async/jobs`): a match on any page shows on the
// first. The time range is typed in local time and sent as RFC 3339.
const SERVER_FILTERS = ["channel", "schedule", "after", "before", "text"];
const FILTER_PARAM = { channel: "channel", schedule: "schedule", after: "created_after", before: "created_before", text: "text" };

function filterValue(k, v) {
  if (!v) return "";
  if (k === "after" || k === "before") { const d = new Date(v); return isNaN(d) ? v : d.toISOString(); }
  return v;
}

async function jobs(params, signal) {
  const status = params.get("status") || "";
  const type = params.get("type") || "";
  const local = Object.fromEntries(SERVER_FILTERS.map((k) => [k, params.get(k) || ""]));
  // The page is in the URL (`cursor`: back, forward and reload keep it); the cursors of the pages
  // before it are in the history entry's state (put there by "Older"), so "Newer" goes back.
  const cursor = params.get("cursor") || "";
  const newer = (history.state && history.state.newer) || null;
  const pageAt = (c) => { const q = new URLSearchParams(params); if (c) q.set("cursor", c); else q.delete("cursor"); return `#/jobs?${q}`; };
  const body = h("tbody", { id: "rows" });
  const pager = h("div", { class: "pager" });
  const actions = h("div", { class: "actions" });
  const matched = h("p", { class: "muted", id: "local-note", role: "status" });
  const form = h("form", { class: "filters", role: "search", onsubmit: (ev) => {
      ev.preventDefault();
      const q = new URLSearchParams();
      for (const k of ["status", "type", ...SERVER_FILTERS]) if (ev.target[k].value.trim()) q.set(k, ev.target[k].value.trim());
      location.hash = `#/jobs?${q}`;
    } },
    h("label", {}, "Status ", h("select", { name: "status", id: "f-status" }, h("option", { value: "" }, "any"),
      STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)))),
    h("label", {}, "Type ", h("input", { name: "type", id: "f-type", value: type, placeholder: "glob, e.g. report.*" })),
    h("fieldset", { class: "local" }, h("legend", {}, "More filters"),
      h("label", {}, "Channel ", h("input", { name: "channel", id: "f-channel", value: local.channel })),
      h("label", {}, "Schedule ", h("input", { name: "schedule", id: "f-schedule", value: local.schedule })),
      h("label", {}, "Created after ", h("input", { name: "after", id: "f-after", type: "datetime-local", value: local.after })),
      h("label", {}, "before ", h("input", { name: "before", id: "f-before", type: "datetime-local", value: local.before })),
      h("label", {}, "Text in args ", h("input", { name: "text", id: "f-text", value: local.text }))),
    h("button", { type: "submit" }, "Filter"));
  const pickAll = h("input", { type: "checkbox", id: "pick-all", "aria-label": "select all",
    onchange: (ev) => body.querySelectorAll(".pick").forEach((c) => { c.checked = ev.target.checked; }) });
  main.replaceChildren(h("h1", {}, "Jobs"), form, actions, matched,
    h("div", { class: "scroll" }, h("table", { class: "jobs" }, h("thead", {}, h("tr", {}, h("th", {}, pickAll),
      h("th", {}, "Job"), h("th", {}, "Type"), h("th", {}, "Status"), h("th", {}, "Attempt"), h("th", {}, "Updated"))), body)),
    pager);

  const picked = () => [...body.querySelectorAll(".pick:checked")].map((c) => c.value);
  async function bulk(verb) {
    const ids = picked();
    if (!ids.length) return toast("Select jobs first.");
    const results = await Promise.allSettled(ids.map((id) => api(`/async/jobs/${id}/${verb}`, { method: "POST" })));
    const failed = results.filter((r) => r.status === "rejected");
    toast(`${verb}: ${ids.length - failed.length} done${failed.length ? `, ${failed.length} refused (${failed[0].reason.message})` : ""}`);
    await load();
  }
  if (auth.can("jobs:cancel")) actions.append(h("button", { id: "bulk-cancel", onclick: once(() => bulk("cancel")) }, "Cancel selected"));
  if (auth.can("jobs:submit")) actions.append(h("button", { id: "bulk-retry", onclick: once(() => bulk("retry")) }, "Retry selected"));

  const during = new Set(); // the events of each load on its way (liveStatus)
  let loads = 0; // the latest load: an earlier one answered after it is not shown (dead.js)
  // `keep`: the same page read again (a resync): the rows still on it stay selected.
  async function load(keep) {
    const mine = ++loads;
    const kept = new Set(keep ? picked() : []);
    const seen = [];
    during.add(seen);
    const q = new URLSearchParams({ limit: "50", fields: ROW_FIELDS });
    if (status) q.set("status", status);
    if (type) q.set("type", type);
    for (const k of SERVER_FILTERS) if (local[k]) q.set(FILTER_PARAM[k], filterValue(k, local[k]));
    if (cursor) q.set("cursor", cursor);
    try {
      const page = await api(`/async/jobs?${q}`);
      if (mine !== loads) return;
      const rows = page.jobs;
      body.replaceChildren(...rows.map((j) => jobRow(j, true)));
      // Events that came while the page was read, on the rows they are newer than.
      during.delete(seen);
      seen.forEach((ev) => liveStatus(body, ev, during));
      body.querySelectorAll(".pick").forEach((c) => { c.checked = kept.has(c.value); });
      // New rows come unselected: so does "select all" (unless every row is selected still).
      pickAll.checked = rows.length > 0 && rows.every((j) => kept.has(j.id));
      if (!rows.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, page.next_cursor ? "No match among the jobs searched so far: go on with Older." : "No job matches.")));
      matched.textContent = SERVER_FILTERS.some((k) => local[k])
        ? `${rows.length} matching job${rows.length === 1 ? "" : "s"} on this page (filtered by the server).` : "";
      // Through once(), as the dead letters' pager: on a tall window a double click turned two
      // pages, or none (Older, then the next page's Newer drawn at the same spot).
      pager.replaceChildren(
        !cursor ? "" : newer ? h("button", { id: "prev-page", onclick: once(turnBack, true) }, "← Newer")
          : h("button", { id: "prev-page", onclick: once(() => { history.pushState(null, "", pageAt("")); return route(); }, true) }, "← Newest"),
        page.next_cursor ? h("button", { id: "next-page", onclick: once(() => {
          history.pushState({ newer: [...(newer || []), cursor] }, "", pageAt(page.next_cursor));
          return route();
        }, true) }, "Older →") : "");
    } catch (e) {
      if (mine === loads) body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "error" }, e.message)));
    } finally {
      during.delete(seen);
    }
  }
  await load();
  if (signal.aborted) return;
  // Rows on screen follow their jobs' events; after a resync (events the stream had not sent
  // were trimmed) the page is read again.
  whenLeft(signal, onEvent((ev) => {
    if (ev.type === "resync") return load(true);
    liveStatus(body, ev, during);
  }));
}

// Why a job is not running, in plain words, from what the job says about itself.
function whyNotRunning(j) {
  switch (j.status) {
    case "WAITING": {
      const w = j.wait || {};
      const items = (w.items || []).map((i) => `signal ${i.key} (${i.seen} of ${i.needed}${i.since ? ` since ${when(i.since)}` : ""})`);
      return `Waiting for ${items.join(" and ") || "signals"}${w.deadline ? `; deadline ${when(w.deadline)} (then ${w.on_deadline || "run"})` : ""}.`;
    }
    case "SCHEDULED":
      return j.attempt > 0
        ? `Scheduled for ${when(j.run_at)} (${ago(j.run_at)}): retry ${j.attempt + 1} of ${j.max_attempts}, after backoff${j.error ? `; last error: ${j.error}` : ""}.`
        : `Scheduled for ${when(j.run_at)} (${ago(j.run_at)}).`;
    case "QUEUED":
      if (j.runner === "(no runner)") return "Parked: no runner claimed its type when it was claimed or at the last start (docs/configuration.md, \"Runner names and config changes\"); it does not run until it is moved.";
      return j.queue
        ? `Queued behind ${j.queue.ahead} jobs; runner ${j.queue.runner} at ${j.queue.in_use}/${j.queue.concurrency}.`
        : `Queued for runner ${j.runner || "?"} since ${ago(j.updated_at)}: it runs when the runner has a free slot.`;
    case "STARTING":
      return `Being started by worker ${j.worker || "?"} (${ago(j.updated_at)}).`;
    case "RUNNING":
      return `Running on worker ${j.worker || "?"} since ${ago(j.started_at)}${j.handle ? ` (${j.handle.kind} ${j.handle.id})` : ""}.`;
    default:
      return j.error ? `Ended ${j.status}: ${j.error}` : `Ended ${j.status} ${ago(j.finished_at)}.`;
  }
}

function submitCommand(j) {
  const args = jsonText(j.args || {});
  const q = (s) => `'${s.replace(/'/g, "'\\''")}'`;
  return `runyard submit ${j.type} --args ${q(args)} --server ${location.origin}`;
}

function curlCommand(j) {
  const body = jsonText({ type: j.type, args: j.args || {} });
  const q = (s) => `'${s.replace(/'/g, "'\\''")}'`;
  return `curl -X POST ${location.origin}/async/jobs -H 'Content-Type: application/json'${auth.token ? " -H \"Authorization: Bearer $RUNYARD_TOKEN\"" : ""} -d ${q(body)}`;
}

async function jobPage(id, signal) {
  let j;
  try { j = await api(`/async/jobs/${encodeURIComponent(id)}`); } catch (e) {
    if (e.status !== 401 && !signal.aborted) main.replaceChildren(h("h1", {}, "Job"), h("p", { class: "error" }, e.message));
    return;
  }
  const status = h("span", { id: "status" });
  const why = h("p", { id: "why", class: "why" });
  const progress = h("progress", { id: "progress", max: 1, value: 0 });
  const details = h("div", { id: "details" });
  const timeline = h("ol", { id: "timeline", class: "timeline" });
  const logs = h("pre", { id: "logs", class: "logs", tabindex: 0 });
  const search = h("input", { id: "log-search", placeholder: "search logs", "aria-label": "search logs", oninput: () => renderLogs() });
  const actions = h("div", { class: "actions" });
  let lines = [];
  let nextLog = 0;
  if (signal.aborted) return; // the user went elsewhere while the job was read

  function renderLogs() {
    const needle = search.value.toLowerCase();
    setText(logs, lines.filter((l) => !needle || l.line.toLowerCase().includes(needle))
      .map((l) => `${logTime(l.ts)} ${l.stream === "stderr" ? "!" : " "} ${l.line}`).join("\n"));
    logs.scrollTop = logs.scrollHeight;
  }
  async function pullLogs() {
    for (let i = 0; i < 20; i++) {
      const page = await api(`/async/jobs/${j.id}/logs?after=${nextLog}&limit=1000`);
      lines.push(...page.lines);
      const more = page.next && page.next !== nextLog && page.lines.length;
      nextLog = page.next || nextLog;
      if (!more) break;
    }
    renderLogs();
  }
  function render() {
    status.replaceChildren(badge(j.status));
    setText(why, whyNotRunning(j));
    if (j.status === "QUEUED" && j.runner) {
      // How full its runner is, on this node (a worker node's slots are its own).
      api("/async/runners").then((r) => {
        const slot = (r.runners || []).find((x) => x.name === j.runner);
        if (slot && slot.in_use != null && j.status === "QUEUED") setText(why, `${whyNotRunning(j)} Runner ${slot.name} has ${slot.in_use} of ${slot.concurrency} slots in use on this node.`);
      }).catch(() => {});
    }
    progress.value = j.status === "SUCCESS" ? 1 : (j.progress || 0);
    // A job whose running attempt reported its outcome (or ran out of time) ends as decided once
    // its process ends: no Cancel then (a cancel of a final report is refused, 409).
    const last = (j.runs || [])[(j.runs || []).length - 1];
    const decided = !!(last && last.attempt === j.attempt && !last.ended_at && last.reported);
    actions.replaceChildren(
      auth.can("jobs:cancel") && !TERMINAL.has(j.status) && !decided ? h("button", { id: "cancel", class: "danger", disabled: !!acting, onclick: once(() => act("cancel")) }, "Cancel") : "",
      auth.can("jobs:submit") && ["ERROR", "TIMEOUT", "CANCELLED"].includes(j.status) ? h("button", { id: "retry", disabled: !!acting, onclick: once(() => act("retry")) }, "Retry") : "",
      h("button", { onclick: () => copy(submitCommand(j)) }, "Copy as runyard submit"),
      h("button", { onclick: () => copy(curlCommand(j)) }, "Copy as curl"));
    const files = Object.entries(j.files || {}).flatMap(([prop, list]) => list.map((f, i) =>
      h("li", {}, h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); download(`/async/jobs/${j.id}/files/${encodeURIComponent(prop)}/${i}`, f.name || `${prop}-${i}`); } },
        `${prop}[${i}] ${f.name || ""}`), ` ${f.size} bytes`)));
    details.replaceChildren(h("dl", { class: "facts" }));
    const dl = details.querySelector("dl");
    for (const [k, v] of [["Type", j.type], ["Runner", j.runner], ["Attempt", `${j.attempt} of ${j.max_attempts}`], ["Channel", j.channel_id],
      ["Worker", j.worker], ["Handle", j.handle ? `${j.handle.kind} ${j.handle.id}` : ""], ["Exit code", j.exit_code],
      ["Created", when(j.created_at)], ["Started", when(j.started_at)], ["Finished", when(j.finished_at)],
      ["Schedule", j.schedule ? `${j.schedule} (${when(j.fire_time)})` : ""], ["Error", j.error]]) {
      if (v === null || v === undefined || v === "") continue;
      dl.append(h("dt", {}, k), h("dd", { "data-fact": k.toLowerCase() }, String(v)));
    }
    details.append(h("h3", {}, "Arguments"), json(j.args || {}));
    if (j.result !== null && j.result !== undefined) details.append(h("h3", {}, "Result"), json(j.result));
    if (files.length) details.append(h("h3", {}, "Files"), h("ul", {}, files));
    timeline.replaceChildren(
      h("li", {}, `${when(j.created_at)}: submitted`),
      ...(j.runs || []).map((r) => h("li", {},
        `attempt ${r.attempt}: claimed by ${r.worker || "?"} ${when(r.claimed_at)}`,
        r.started_at ? `, started ${when(r.started_at)}` : "",
        r.ended_at ? `, ended ${when(r.ended_at)}` : "",
        r.outcome ? ` → ${typeof r.outcome === "string" ? r.outcome : jsonText(r.outcome)}` : "")),
      TERMINAL.has(j.status) ? h("li", {}, `${when(j.finished_at)}: ${j.status}${j.exit_code !== null && j.exit_code !== undefined ? ` (exit ${j.exit_code})` : ""}`) : "");
  }
  // The action on its way: a re-render meanwhile (an event, the poll) draws its buttons disabled
  // too (once() ignores a click at the action's spot anyway, and for SETTLE_MS after it ends).
  let acting = null;
  async function act(verb) {
    acting = verb;
    try {
      j = await api(`/async/jobs/${j.id}/${verb}`, { method: "POST" }); acting = null; render(); toast(`${verb}: ${j.status}`);
    } catch (e) { toast(`${verb} refused: ${e.message}`); } finally { if (acting) { acting = null; render(); } }
  }
  async function refresh() {
    j = await api(`/async/jobs/${j.id}`);
    render();
    await pullLogs();
  }
  main.replaceChildren(
    h("h1", {}, "Job ", h("span", { class: "mono" }, j.id), " ", status),
    why, progress, actions,
    h("div", { class: "grid" },
      h("section", { class: "card" }, h("h2", {}, "Details"), details),
      h("section", { class: "card" }, h("h2", {}, "Timeline"), timeline)),
    h("section", { class: "card" }, h("h2", {}, "Logs"), h("div", { class: "logbar" }, search,
      h("button", { onclick: () => downloadText(lines.map((l) => l.line).join("\n") + "\n", `${j.id}.log`) }, "Download")), logs));
  render();
  await pullLogs();
  if (signal.aborted) return;
  // Follow: events of this job refresh it, and so does a resync (its events may have been
  // trimmed before the stream sent them); logs are pulled on each event and every 2 s while it
  // runs (log lines are not events).
  // One read at a time; an event that comes during one (that read may have missed its change)
  // reads once more when it ends (the 2 s poll does not: it comes again anyway).
  let busy = false, again = false;
  const tick = async (changed) => {
    if (busy) { again = again || changed; return; }
    busy = true;
    do {
      again = false;
      try { await refresh(); } catch { /* shown on the next one */ }
    } while (again && !signal.aborted);
    busy = false;
  };
  const off = onEvent((ev) => { if (ev.job_id === j.id || ev.type === "resync") tick(true); });
  const timer = setInterval(() => { if (!TERMINAL.has(j.status)) tick(false); }, 2000);
  whenLeft(signal, () => { off(); clearInterval(timer); });
}

// A schedule's last runs: the newest RUNS_SHOWN of each, and the jobs of those read (at most
// JOB_READS per load, the first schedules' first): a fire that made a job (`submitted`) shows that
// job's status, not the fire's "submitted"; a fire without one (skipped, missed, error) its
// outcome. A `skipped_overlap` carries the job_id of the job that blocked it (not its own): it
// shows its outcome, linked to that job.
const RUNS_SHOWN = 3;
const JOB_READS = 60;

const madeJob = (x) => x.outcome === "submitted" && x.job_id;

async function runJobs(list) {
  const ids = [...new Set(list.flatMap((s) => (s.last_runs || []).slice(0, RUNS_SHOWN).filter(madeJob).map((x) => x.job_id)))].slice(0, JOB_READS);
  const got = await Promise.allSettled(ids.map((id) => api(`/async/jobs/${encodeURIComponent(id)}`)));
  return new Map(ids.map((id, i) => [id, got[i].status === "fulfilled" ? got[i].value : null]));
}

function lastRun(x, jobs) {
  const at = when(x.fire_time);
  const job = madeJob(x) ? jobs.get(x.job_id) : null;
  if (job) return h("a", { href: `#/job/${x.job_id}`, "data-run": x.outcome }, `${at} `, badge(job.status));
  const text = `${at} ${x.outcome || ""}${x.count > 1 ? ` ×${x.count}` : ""}`.trim();
  // A job not read (gone, or past JOB_READS): the fire's outcome, still linked.
  if (madeJob(x)) return h("a", { href: `#/job/${x.job_id}`, "data-run": x.outcome }, text);
  // A skipped fire: linked to the job of the schedule that was still active.
  if (x.job_id) return h("a", { href: `#/job/${x.job_id}`, "data-run": x.outcome, title: `job ${x.job_id} of this schedule was still active` }, text);
  return h("span", { "data-run": x.outcome, title: x.error || undefined }, text);
}

// The schedules table keeps its geometry when a row changes (probe s53a F2: after Pause the
// table laid itself out anew, Resume wider than Pause and the "Next fires" cell emptied, rows
// changed height, and a person's next click, aimed where another row's button was, met the
// paused row's Resume or Trigger): its columns have fixed widths (app.css `table.schedules`),
// the "paused" badge keeps its place when hidden, next fires and last runs are SLOTS lines of
// one line each (a paused schedule has no next fire: "paused" says why), and Pause, Resume and
// Trigger are as wide as each other.
const SLOTS = 3;
const slots = (items) => Array.from({ length: SLOTS }, (_, i) => h("span", { class: "slot" }, items[i] ?? ""));

async function schedules() {
  const body = h("tbody", { id: "schedules" });
  main.replaceChildren(h("h1", {}, "Schedules"),
    h("div", { class: "scroll" }, h("table", { class: "schedules" }, h("thead", {}, h("tr", {}, h("th", { class: "name" }, "Name"), h("th", { class: "cron" }, "Cron"), h("th", { class: "fires" }, "Next fires"), h("th", {}, "Last runs"), h("th", { class: "acts" }, ""))), body)));
  // The actions on their way, by schedule and action ("state" for pause and resume, "trigger"):
  // the table is drawn anew after any row's action, and a button whose request still runs is
  // drawn disabled (probe s53a F1: it came back enabled, and a second click on a slow Trigger
  // made a second job). The job page's `acting` is the same.
  const acting = new Set();
  const key = (name, what) => JSON.stringify([name, what]);
  // Only the latest read is drawn: an earlier one answered after it would draw an older state.
  let reads = 0;
  async function load() {
    const n = ++reads;
    const r = await api("/async/schedules");
    const list = r.schedules || r || [];
    const jobs = await runJobs(list);
    if (n !== reads) return;
    const act = (s, what, verb, label) => h("button", { "data-act": what, disabled: acting.has(key(s.name, what)), onclick: once(() => post(s.name, what, verb)) }, label);
    body.replaceChildren(...list.map((s) => h("tr", { "data-schedule": s.name },
      h("td", { class: "name" }, s.name, " ", h("span", { class: `badge s-cancelled${s.paused ? "" : " ghost"}` }, "paused")),
      h("td", { class: "mono" }, `${s.cron} ${s.timezone || ""}`),
      h("td", {}, s.paused && !(s.next_fires || []).length ? slots([h("span", { class: "muted" }, "paused")]) : slots((s.next_fires || []).slice(0, SLOTS).map(when))),
      h("td", { class: "runs" }, slots((s.last_runs || []).slice(0, RUNS_SHOWN).map((x) => lastRun(x, jobs)))),
      h("td", { class: "acts" }, auth.can("schedules:write") ? [
        act(s, "state", s.paused ? "resume" : "pause", s.paused ? "Resume" : "Pause"),
        act(s, "trigger", "trigger", "Trigger")] : ""))));
    if (!list.length) body.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No schedule.")));
  }
  async function post(name, what, verb) {
    acting.add(key(name, what));
    try {
      try { await api(`/async/schedules/${encodeURIComponent(name)}/${verb}`, { method: "POST" }); toast(`${name}: ${verb}`); } catch (e) { return toast(e.message); }
      await load().catch((e) => toast(e.message));
    } finally {
      acting.delete(key(name, what));
      // The button drawn meanwhile (disabled) is this action's: enabled again, as once() does
      // the one clicked.
      const row = [...body.rows].find((tr) => tr.dataset.schedule === name);
      const button = row && row.querySelector(`button[data-act="${what}"]`);
      if (button) button.disabled = false;
    }
  }
  await load().catch((e) => body.replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "error" }, e.message))));
}

async function copy(text) {
  try { await navigator.clipboard.writeText(text); toast("Copied."); } catch { prompt("Copy:", text); }
}

function downloadText(text, name) {
  const a = h("a", { href: URL.createObjectURL(new Blob([text], { type: "text/plain" })), download: name });
  document.body.append(a); a.click(); a.remove();
}

async function download(path, name) {
  const headers = auth.token ? { Authorization: `Bearer ${auth.token}` } : {};
  const r = await fetch(path, { headers });
  if (!r.ok) return toast(`download: HTTP ${r.status}`);
  const a = h("a", { href: URL.createObjectURL(await r.blob()), download: name });
  document.body.append(a); a.click(); a.remove();
}

// ---------------------------------------------------------------- router

function route() { drawing = draw(); return drawing; }
async function draw() {
  if (navigation) navigation.abort();
  const next = new AbortController();
  // A page turned by an action (once(fn, true)) holds its spot: the second click of a double click
  // on "Older" landed on the next page's "Newer", drawn where "Older" was (probe s53a, F4).
  if (clickGuard.turns && clickGuard.turns === navigation) Object.assign(clickGuard, { running: next, turns: null });
  navigation = next;
  const { signal } = navigation;
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  document.querySelectorAll("[data-nav]").forEach((a) => a.removeAttribute("aria-current"));
  const nav = { "/": "overview", "": "overview", "/jobs": "jobs", "/dead": "dead", "/signals": "signals", "/schedules": "schedules" }[path] || "";
  if (nav) document.querySelector(`[data-nav="${nav}"]`).setAttribute("aria-current", "page");
  try {
    if (path === "/" || path === "") await overview(signal);
    else if (path === "/jobs") await jobs(params, signal);
    else if (path.startsWith("/job/")) await jobPage(decodeURIComponent(path.slice(5)), signal);
    else if (path === "/schedules") await schedules();
    else if (path === "/signals") await signalsPage(params, signal);
    else if (path === "/dead") await deadLetters(params, signal);
    else main.replaceChildren(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Overview")));
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401) && !signal.aborted) main.replaceChildren(h("p", { class: "error" }, e.message));
  }
  if (signal.aborted) return; // superseded: the newer navigation says when its page is ready
  document.body.dataset.ready = path;
  // When the first page had its data on screen (ms since navigation; read by the browser tests).
  if (!document.body.dataset.readyMs) document.body.dataset.readyMs = String(Math.round(performance.now()));
}

// The chart's hour from the store, then the live stream from the newest event of that read
// (chart.js); the overview waits for it before it says its data is on screen.
let activityReady = Promise.resolve();

async function start() {
  document.getElementById("signin")?.remove();
  if (!(await loadScopes())) return; // the sign-in form is shown
  activityReady = followActivity(); // follow() runs until the page goes
  await route();
}

window.addEventListener("hashchange", route);
start();
