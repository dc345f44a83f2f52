
// ---------------------------------------------------------------- signals.js: #/signals

// Every key with records comes from `GET /async/signals` (by name, with its count and newest
// time; the first 1,000 keys); added to them: the keys waiting jobs wait for (no record yet) and
// the keys looked up here (kept in this tab, and in the URL: `#/signals?key=a&key=b`).
const LOOKED_UP = "runyard.signal-keys";
const SIGNAL_LIMIT = 10000; // the API's largest page; a key keeps at most its 10,000 newest

// A key's records, page by page (a page ends at about 4 MiB of records; `next_since` goes on):
// the seq and time of each, and the newest five whole (payloads of the others are not kept).
async function recordsOf(key) {
  const times = [], newest = [];
  let since = null;
  do {
    const q = `limit=${SIGNAL_LIMIT}${since === null ? "" : `&since=${encodeURIComponent(since)}`}`;
    const page = await api(`/async/signals/${encodeURIComponent(key)}?${q}`);
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

// How many of a waiting job's records have come: the list API does not read them live (a job's
// own page does), so they are counted here from the key's records, as the server counts them.
function seenOf(recs, item) {
  const since = item.since ? Date.parse(item.since) : -Infinity;
  return Math.min(item.needed, recs.filter((r) => Date.parse(r.at) >= since).length);
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
  const send = auth.can("signals:write") ? h("form", { class: "filters", id: "signal-send", onsubmit: async (ev) => {
      ev.preventDefault();
      const key = ev.target.key.value.trim();
      let payload;
      try { payload = ev.target.payload.value.trim() ? parseJson(ev.target.payload.value) : undefined; } catch { return toast("The payload must be JSON."); }
      try {
        const r = await api(`/async/signals/${encodeURIComponent(key)}`, { method: "POST", body: payload === undefined ? {} : { payload } });
        toast(`Signal ${r.key} #${r.seq} written.`);
        if (!remembered.includes(key)) location.hash = `#/signals?${new URLSearchParams([...asked.map((k) => ["key", k]), ["key", key]])}`;
        else load();
      } catch (e) { toast(`Signal refused: ${e.message}`); }
    } },
    h("label", {}, "Send signal ", h("input", { name: "key", id: "send-key", required: true, placeholder: "key" })),
    h("label", {}, "payload ", h("input", { name: "payload", id: "send-payload", placeholder: "JSON (optional)" })),
    h("button", { type: "submit" }, "Send")) : "";
  main.replaceChildren(h("h1", {}, "Signals"),
    h("p", { class: "muted" }, "Every key with records, the keys waiting jobs wait for, and the keys you look up."),
    form, send, list);

  let waitingIds = new Set(); // the waiting jobs shown
  async function load() {
    const [waiting, listed] = await Promise.all([
      api("/async/jobs?status=WAITING&limit=100"),
      api("/async/signals?limit=1000").catch(() => ({ keys: [] }))]);
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
      const latestFirst = newest.slice().reverse();
      const waiters = waitersByKey.get(key) || [];
      return h("section", { class: "card", "data-signal": key, "aria-label": `signal ${key}` },
        h("h2", { class: "mono" }, key),
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
