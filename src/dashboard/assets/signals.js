
// ---------------------------------------------------------------- signals.js: #/signals

// Every key with records comes from `GET /async/signals` (by name, with its count and newest
// time; the first 1,000 keys); added to them: the keys waiting jobs wait for (no record yet) and
// the keys looked up here (kept in this tab, and in the URL: `#/signals?key=a&key=b`).
const LOOKED_UP = "runyard.signal-keys";
const SIGNAL_LIMIT = 10000; // the API's largest page; a key keeps at most its 10,000 newest
// The waiting jobs read for their keys: only the members used (`fields`), following `next_cursor`
// for at most WAIT_PAGES pages of 100; past them the page says it saw the first ones only.
const WAIT_PAGES = 10;

// The path of a key's records, or null for `.` and `..`: a browser's URL parser removes such a
// path segment, also percent-encoded (`%2E`), so the page cannot reach them. The server no longer
// takes them for a new record, a wait or an emit (a client would resolve them as a path); records
// an older version stored under them can be read with curl (`/async/signals/%2E`, which the
// server decodes).
function signalPath(key) {
  return key === "." || key === ".." ? null : `/async/signals/${encodeURIComponent(key)}`;
}
const UNREACHABLE = (key) => `The key "${key}" cannot be read from a browser: browsers drop "." and ".." path segments from a URL, even as %2E. The server no longer takes it for a new signal (a key may not be "." or ".."); records an older version stored under it can be read with curl: curl <server>/async/signals/${key === "." ? "%2E" : "%2E%2E"}`;
const DOT_KEY = (key) => `The key "${key}" cannot be sent: a signal key may not be "." or ".." (a URL would resolve it as a path).`;

// A key's records, page by page (a page ends at about 4 MiB of records; `next_since` goes on):
// the seq and time of each, and the newest five whole (payloads of the others are not kept).
async function recordsOf(key) {
  const times = [], newest = [];
  let since = null;
  do {
    const q = `limit=${SIGNAL_LIMIT}${since === null ? "" : `&since=${encodeURIComponent(since)}`}`;
    const path = signalPath(key);
    if (!path) throw new Error(UNREACHABLE(key));
    const page = await api(`${path}?${q}`);
    for (const r of page.signals || []) {
      times.push({ seq: r.seq, at: r.at });
      newest.push(r);
      if (newest.length > 5) newest.shift();
    }
    since = page.next_since ?? null;
  } while (since !== null && times.length < SIGNAL_LIMIT);
  return { times, newest };
}

function lookedUp() {
  try { return JSON.parse(sessionStorage.getItem(LOOKED_UP) || "[]"); } catch { return []; }
}

// An RFC 3339 time as microseconds since the epoch (a Number: exact for any year up to 2255),
// NaN when it is not one. Date.parse keeps milliseconds only; the server compares microseconds.
function micros(ts) {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/i.exec(ts || "");
  if (!m) return NaN;
  return Date.parse(m[1] + m[3]) * 1000 + Number((m[2] || "").padEnd(6, "0").slice(0, 6));
}

// How many of a waiting job's records have come: the list API does not read them live (a job's
// own page does), so they are counted here from the key's records, as the server counts them
// (a record at or after the item's `since`, to the microsecond).
function seenOf(recs, item) {
  const since = item.since ? micros(item.since) : -Infinity;
  return Math.min(item.needed, recs.filter((r) => micros(r.at) >= since).length);
}

async function signalsPage(params, signal) {
  const asked = params.getAll("key").filter(Boolean);
  const remembered = [...new Set([...lookedUp(), ...asked])].slice(-50);
  sessionStorage.setItem(LOOKED_UP, JSON.stringify(remembered));
  const list = h("div", { id: "signals" }, h("p", { class: "muted" }, "loading…"));
  const form = h("form", { class: "filters", role: "search", onsubmit: (ev) => {
      ev.preventDefault();
      const key = ev.target.key.value.trim();
      if (key) location.hash = `#/signals?${new URLSearchParams([...asked.map((k) => ["key", k]), ["key", key]])}`;
    } },
    h("label", {}, "Signal key ", h("input", { name: "key", id: "signal-key", required: true, placeholder: "e.g. src.orders" })),
    h("button", { type: "submit" }, "Look up"));
  const send = auth.can("signals:write") ? h("form", { class: "filters", id: "signal-send", onsubmit: once(async (ev) => {
      const key = ev.target.key.value.trim();
      let payload;
      try { payload = ev.target.payload.value.trim() ? parseJson(ev.target.payload.value) : undefined; } catch { return toast("The payload must be JSON."); }
      const path = signalPath(key);
      if (!path) return toast(DOT_KEY(key));
      try {
        const r = await api(path, { method: "POST", body: payload === undefined ? {} : { payload } });
        toast(`Signal ${r.key} #${r.seq} written.`);
        if (auth.readless) return; // nothing to show: the page cannot read it
        if (!remembered.includes(key)) location.hash = `#/signals?${new URLSearchParams([...asked.map((k) => ["key", k]), ["key", key]])}`;
        else load();
      } catch (e) { toast(`Signal refused: ${e.message}`); }
    }) },
    h("label", {}, "Send signal ", h("input", { name: "key", id: "send-key", required: true, placeholder: "key" })),
    h("label", {}, "payload ", h("input", { name: "payload", id: "send-payload", placeholder: "JSON (optional)" })),
    h("button", { type: "submit" }, "Send")) : "";
  if (auth.readless) {
    main.replaceChildren(h("h1", {}, "Signals"),
      h("p", { class: "muted", id: "signals-readless" }, `This sign-in may not read jobs or signals (no jobs:read): no key is listed.${send ? " It may send a signal." : ""}`),
      send);
    return;
  }
  const cut = h("p", { class: "muted", id: "waiting-cut" });
  main.replaceChildren(h("h1", {}, "Signals"),
    h("p", { class: "muted" }, "Every key with records, the keys waiting jobs wait for, and the keys you look up."),
    form, send, cut, list);

  let waitingIds = new Set(); // the waiting jobs shown
  async function load() {
    const [waiting, listed] = await Promise.all([
      listJobs({ status: "WAITING", fields: "id,type,wait" }, 100 * WAIT_PAGES, WAIT_PAGES),
      api("/async/signals?limit=1000").catch(() => ({ keys: [] }))]);
    setText(cut, waiting.more ? `The keys waited for are those of the first ${waiting.jobs.length} waiting jobs; there may be more.` : "");
    const counted = new Map((listed.keys || []).map((k) => [k.key, k]));
    waitingIds = new Set(waiting.jobs.map((j) => j.id));
    const waitersByKey = new Map();
    for (const j of waiting.jobs) for (const it of (j.wait && j.wait.items) || []) {
      if (!waitersByKey.has(it.key)) waitersByKey.set(it.key, []);
      waitersByKey.get(it.key).push([j, it]);
    }
    const emitted = (listed.keys || []).map((k) => k.key);
    const keys = [...new Set([...remembered, ...waitersByKey.keys(), ...emitted])].sort();
    if (!keys.length) {
      list.replaceChildren(h("p", { class: "muted" }, "No signal key known yet: no job waits for one. Look one up above."));
      return;
    }
    const cards = await Promise.all(keys.map(async (key) => {
      let recs = [], newest = [], err = null;
      try { ({ times: recs, newest } = await recordsOf(key)); } catch (e) { err = e.message; }
      // A key the page cannot read (`.`, `..`): what the listing says of it.
      const known = signalPath(key) ? null : counted.get(key);
      const latestFirst = newest.slice().reverse();
      const waiters = waitersByKey.get(key) || [];
      return h("section", { class: "card", "data-signal": key, "aria-label": `signal ${key}` },
        h("h2", { class: "mono" }, key),
        known ? h("p", { class: "muted" }, `${known.count} record${known.count === 1 ? "" : "s"} kept; latest ${when(known.latest)} (${ago(known.latest)}).`) : "",
        err ? h("p", { class: "error" }, err) : h("p", { class: "muted" },
          recs.length ? `${recs.length}${recs.length >= SIGNAL_LIMIT ? "+" : ""} record${recs.length === 1 ? "" : "s"} kept; latest ${when(recs[recs.length - 1].at)} (${ago(recs[recs.length - 1].at)}).` : "No record kept."),
        latestFirst.length ? h("table", { class: "records" },
          h("thead", {}, h("tr", {}, h("th", {}, "Seq"), h("th", {}, "At"), h("th", {}, "Id"), h("th", {}, "Payload"))),
          h("tbody", {}, latestFirst.map((r) => h("tr", { "data-seq": r.seq },
            h("td", {}, String(r.seq)), h("td", { title: r.at }, when(r.at)), h("td", { class: "mono" }, r.id || ""),
            h("td", { class: "mono" }, r.payload === null || r.payload === undefined ? "" : jsonText(r.payload)))))) : "",
        waiters.length ? h("div", {}, h("h3", {}, "Jobs waiting for it"), h("ul", { class: "waiters" }, waiters.map(([j, it]) => h("li", { "data-job": j.id },
          h("a", { href: `#/job/${j.id}`, class: "mono" }, `${j.type} ${j.id.slice(0, 8)}`),
          ` ${seenOf(recs, it)} of ${it.needed}${it.since ? ` since ${when(it.since)}` : ""}${j.wait.deadline ? `, deadline ${when(j.wait.deadline)}` : ""}`)))) : "");
    }));
    list.replaceChildren(...cards);
  }
  await load().catch((e) => list.replaceChildren(h("p", { class: "error" }, e.message)));
  if (signal.aborted) return; // the user went elsewhere meanwhile: no timer, no listener
  // Records are not events: re-read every 5 s. Sooner (500 ms) only when the waiting jobs shown
  // change: a job starts waiting, one shown stops (released, cancelled, its deadline passed), or
  // a resync (such an event may have been trimmed); not on other events (progress, other jobs),
  // each of which would read every key again. One read at a time: a read still going (a key of
  // large records takes many pages) is not joined by another; a change of the waiting jobs seen
  // meanwhile (that read may have missed it) starts one more read when it ends.
  let pending = null, reading = false, stale = false;
  const again = (changed) => {
    if (reading) { stale = stale || changed; return; }
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      reading = true;
      load().catch(() => {}).finally(() => {
        reading = false;
        if (stale && !signal.aborted) { stale = false; again(true); }
      });
    }, 500);
  };
  const off = onEvent((ev) => {
    if (ev.type === "resync" || (ev.type === "status" && (ev.runyard_status === "WAITING" || waitingIds.has(ev.job_id)))) again(true);
  });
  const timer = setInterval(() => again(false), 5000);
  whenLeft(signal, () => { off(); clearInterval(timer); clearTimeout(pending); });
}
