
// ---------------------------------------------------------------- chart.js: the last hour

// Outcomes of the last hour, per minute: jobs that finished, by their final status (SUCCESS
// counts as done, ERROR or TIMEOUT as failed). Read once from the store (`GET /async/activity`,
// an index range, however many jobs are stored); the global event stream then goes on from the
// newest event of that read, and each status event after the read's `as_of` adds one. Without the
// route (an older server: 404; a token confined to channels: 403) the stream replays from its oldest
// event instead, and the tally counts what it replays (`events.global_limit`). Any other failure
// (a 503, the network) may pass: the chart says the hour is not available, and the read is retried.
const MINUTE_MS = 60000;
const outcomes = { ok: new Map(), failed: new Map() }; // minute number -> count
const chartWatchers = new Set();
let tallyAfter = -Infinity; // ms: finishes up to this time came from the store
let tallySource = "the event stream";
// Why the hour cannot be shown: neither the store's counts nor the global stream are open to
// this token (one confined to channel globs): a plausible-looking zero would mislead.
let tallyRefused = "";
// Why the store's counts could not be read just now (a failure that may pass: retried).
let tallyFailed = "";

function tallyUnavailable(why) {
  if (tallyAfter !== -Infinity) return; // the store's counts are there: the chart stands
  tallyRefused = why;
  chartWatchers.forEach((f) => f());
}

// The live stream was refused (403: "no live updates"): a chart from the store stands as read at
// the start, and its legend says it is not live (with no store read, tallyUnavailable says why).
function tallyNotLive(why) {
  if (tallyAfter === -Infinity) return;
  tallySource = `the store as of ${new Date(tallyAfter).toLocaleTimeString()}; not live: ${why}`;
  chartWatchers.forEach((f) => f());
}

function tallyOutcome(ev) {
  if (rereading) rereading.push(ev);
  if (ev.type === "resync") { rereadActivity(); return; }
  if (ev.type !== "status") return;
  const kind = ev.runyard_status === "SUCCESS" ? "ok" : ["ERROR", "TIMEOUT"].includes(ev.runyard_status) ? "failed" : null;
  const t = Date.parse(ev.ts);
  if (!kind || isNaN(t) || t <= tallyAfter) return;
  const minute = Math.floor(t / MINUTE_MS);
  const oldest = Math.floor(Date.now() / MINUTE_MS) - 59;
  if (minute < oldest) return;
  outcomes[kind].set(minute, (outcomes[kind].get(minute) || 0) + 1);
  chartWatchers.forEach((f) => f());
}

// The last hour from the store; returns the event id the live stream goes on from (null: from
// the stream's start, no event yet), or undefined when the server has no such route (404) or not
// for this token (403; 401 asks to sign in). Throws on any other failure (a 503, the network).
async function loadActivity() {
  outcomes.ok.clear(); outcomes.failed.clear();
  tallyAfter = -Infinity; tallySource = "the event stream"; tallyRefused = ""; tallyFailed = "";
  let a;
  try { a = await api("/async/activity"); } catch (e) {
    if ([401, 403, 404].includes(e.status)) return undefined;
    tallyFailed = e.message || String(e);
    chartWatchers.forEach((f) => f());
    throw e;
  }
  tallyFrom(a);
  tallySource = "the store, live from the event stream";
  chartWatchers.forEach((f) => f());
  return a.last_event_id ?? null;
}

// The tally is the store's counts of `a` (an answer of /async/activity).
function tallyFrom(a) {
  outcomes.ok.clear(); outcomes.failed.clear();
  for (const m of a.minutes || []) {
    const minute = Math.floor(Date.parse(m.at) / MINUTE_MS);
    if (isNaN(minute)) continue;
    if (m.SUCCESS) outcomes.ok.set(minute, m.SUCCESS);
    if (m.ERROR || m.TIMEOUT) outcomes.failed.set(minute, (m.ERROR || 0) + (m.TIMEOUT || 0));
  }
  tallyAfter = Date.parse(a.as_of);
}

// A resync: events after the stream's cursor were trimmed before it read them, so the live
// additions miss their outcomes; the hour is read from the store again (when it came from there:
// without the route there is nothing to read). The chart stays live meanwhile; the events that
// come during the read are counted again on top of it (those after its `as_of`). One read at a
// time; a failed one leaves the chart as it was.
let rereading = null;
async function rereadActivity() {
  if (rereading || tallyAfter === -Infinity) return;
  const during = rereading = [];
  const run = activityRun;
  let a = null;
  try { a = await api("/async/activity"); } catch { /* the chart stands as it was */ }
  rereading = null;
  if (!a || run !== activityRun) return; // failed, or a new start read the hour itself
  tallyFrom(a);
  during.forEach(tallyOutcome);
  chartWatchers.forEach((f) => f());
}
listeners.add(tallyOutcome);

// The hour, then the live stream from the read's newest event; the promise settles after the
// first read (the overview waits for it). A read that failed is retried (2 s, doubling to 30 s)
// and the stream waits for it: started without the read's event id, it would replay the whole
// global stream. stopActivity() (signing out, or a new start) ends the retries.
let activityRun = 0;
function stopActivity() { activityRun++; }
function followActivity() {
  const run = ++activityRun;
  let firstRead;
  const first = new Promise((r) => { firstRead = r; });
  (async () => {
    for (let wait = 2000; ; wait = Math.min(wait * 2, 30000)) {
      let from, failed = false;
      try { from = await loadActivity(); } catch { failed = true; }
      firstRead();
      if (run !== activityRun) return;
      if (!failed) { follow(from); return; }
      live.textContent = "not live yet"; live.className = "live off"; live.title = shown(tallyFailed);
      await new Promise((r) => setTimeout(r, wait));
      if (run !== activityRun) return;
    }
  })();
  return first;
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  el.append(...children);
  return el;
}

// The last 60 minutes as stacked bars (done below, failed on top), oldest left; a summary for
// screen readers and for the eye.
function throughputChart() {
  const box = h("div", { id: "throughput", class: "chart" });
  function draw() {
    if (tallyRefused) {
      delete box.dataset.ok; delete box.dataset.failed;
      box.replaceChildren(h("p", { class: "muted" }, `The last hour is not available to this sign-in: ${tallyRefused}`));
      return;
    }
    if (tallyFailed) {
      delete box.dataset.ok; delete box.dataset.failed;
      box.replaceChildren(h("p", { class: "muted" }, `The last hour is not available right now (${tallyFailed}); trying again.`));
      return;
    }
    const now = Math.floor(Date.now() / MINUTE_MS);
    const W = 600, H = 120, bw = W / 60;
    let ok = 0, failed = 0, busiest = 0;
    const mins = [];
    for (let m = now - 59; m <= now; m++) {
      const o = outcomes.ok.get(m) || 0, f = outcomes.failed.get(m) || 0;
      ok += o; failed += f; busiest = Math.max(busiest, o + f);
      mins.push([m, o, f]);
    }
    for (const map of [outcomes.ok, outcomes.failed]) for (const m of map.keys()) if (m < now - 59) map.delete(m);
    const peak = Math.max(1, busiest);
    const bars = [];
    mins.forEach(([m, o, f], i) => {
      const x = (i * bw + 0.5).toFixed(1);
      const ho = (o / peak) * (H - 4), hf = (f / peak) * (H - 4);
      const label = `${new Date(m * MINUTE_MS).toTimeString().slice(0, 5)}: ${o} done, ${f} failed`;
      if (o) bars.push(s("rect", { class: "ok", x, y: (H - ho).toFixed(1), width: (bw - 1).toFixed(1), height: ho.toFixed(1) }, s("title", {}, label)));
      if (f) bars.push(s("rect", { class: "failed", x, y: (H - ho - hf).toFixed(1), width: (bw - 1).toFixed(1), height: hf.toFixed(1) }, s("title", {}, label)));
    });
    const summary = `Last hour: ${ok} done, ${failed} failed; busiest minute ${busiest}.`;
    box.dataset.ok = ok; box.dataset.failed = failed;
    box.replaceChildren(
      s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": summary, preserveAspectRatio: "none" },
        s("line", { class: "axis", x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5 }), ...bars),
      h("p", { class: "legend" }, h("span", { class: "key ok" }, `${ok} done`), " ", h("span", { class: "key failed" }, `${failed} failed`),
        h("span", { class: "muted" }, ` jobs ended per minute, last 60 minutes (from ${tallySource})`)));
  }
  draw();
  let pending = null;
  const redraw = () => { if (!pending) pending = setTimeout(() => { pending = null; draw(); }, 300); };
  chartWatchers.add(redraw);
  const timer = setInterval(draw, MINUTE_MS); // the window slides even when nothing happens
  return { el: box, stop: () => { chartWatchers.delete(redraw); clearInterval(timer); clearTimeout(pending); } };
}

// The nodes that hold leases: the workers of STARTING and RUNNING jobs, read with only the
// members shown (`fields`) and following `next_cursor`, at most LEASE_PAGES pages of 100 of each:
// past them the panel says how many jobs it counted. The store still reads whole records (args of
// up to a megabyte each), so after events the panel is read again at most every LEASE_EVERY_MS,
// and once after the last event; one read at a time.
const LEASE_PAGES = 2;
const LEASE_EVERY_MS = 5000;
function leaseHolders() {
  const box = h("div", { id: "leases" }, h("p", { class: "muted" }, "loading…"));
  let stopped = false, last = 0, timer = null;
  async function read() {
    try {
      const reads = await Promise.all(["STARTING", "RUNNING"].map((st) =>
        listJobs({ status: st, fields: "id,type,worker" }, 100 * LEASE_PAGES, LEASE_PAGES)));
      const byWorker = new Map();
      for (const j of reads.flatMap((r) => r.jobs)) {
        const w = j.worker || "(unknown)";
        if (!byWorker.has(w)) byWorker.set(w, []);
        byWorker.get(w).push(j);
      }
      const capped = reads.some((r) => r.more);
      box.replaceChildren(byWorker.size
        ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Worker"), h("th", {}, "Leases"), h("th", {}, "Jobs"))),
          h("tbody", {}, [...byWorker].sort().map(([w, list]) => h("tr", { "data-worker": w },
            h("td", { class: "mono" }, w), h("td", {}, String(list.length)),
            h("td", {}, list.slice(0, 5).flatMap((j, i) => [i ? ", " : "", h("a", { href: `#/job/${j.id}`, class: "mono" }, `${j.type} ${j.id.slice(0, 8)}`)]),
              list.length > 5 ? ` and ${list.length - 5} more` : "")))))
        : h("p", { class: "muted" }, "No job holds a lease: nothing is starting or running."),
      capped ? h("p", { class: "muted", id: "leases-cut" }, `Counted from the first ${reads[0].jobs.length} starting and ${reads[1].jobs.length} running jobs; there may be more.`) : "");
    } catch (e) {
      box.replaceChildren(h("p", { class: "muted" }, `Leases are not available (${e.message}).`));
    }
  }
  const once = oneAtATime(read, () => stopped);
  const refresh = () => { last = Date.now(); return once(); };
  // After an event: a read LEASE_EVERY_MS after the last one started at the earliest; the events
  // meanwhile wait for it (it starts after them).
  const later = () => {
    if (timer || stopped) return;
    timer = setTimeout(() => { timer = null; if (!stopped) refresh(); }, Math.max(0, last + LEASE_EVERY_MS - Date.now()));
  };
  return { el: box, refresh, later, stop: () => { stopped = true; clearTimeout(timer); } };
}
