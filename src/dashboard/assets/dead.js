
// ---------------------------------------------------------------- dead.js: #/dead

// How many dead letters there are (`GET /async/dead_letters`, counted by the store), as a card of
// the overview linking to the page. The store reads every ERROR job for it, so it is re-read only
// after an event that may change it (a job ending ERROR, or one queued or scheduled again after
// an attempt: a retry; or a resync, after which such events may be missing), at most every 5 s.
// Whether event time `a` comes before `b`: RFC 3339 with microseconds, compared as text when
// both have the same form (Date.parse keeps milliseconds: an earlier event of the same
// millisecond counted as newer and took a dead letter off the list: review rev53c).
function before(a, b) {
  if (typeof a === "string" && typeof b === "string" && a.length === b.length && a.endsWith("Z") && b.endsWith("Z")) return a < b;
  return Date.parse(a) < Date.parse(b); // NaN: not before
}

function changesDeadLetters(ev) {
  return ev.type === "resync" || ev.type === "status" && (ev.runyard_status === "ERROR"
    || (["QUEUED", "SCHEDULED"].includes(ev.runyard_status) && ev.attempt > 0));
}

function deadLetterCount() {
  const n = h("span", { class: "n" }, "…");
  const el = h("div", { class: "cards" }, h("a", { class: "count", id: "dead-count", href: "#/dead", "data-count": "DEAD" },
    n, h("span", { class: "badge s-error" }, "DEAD LETTERS")));
  let timer = null;
  async function refresh() {
    try {
      const d = await api("/async/dead_letters");
      n.textContent = String(d.count);
    } catch (e) {
      n.textContent = "?"; n.title = shown(String(e.message));
    }
  }
  return {
    el, refresh,
    later: () => { if (!timer) timer = setTimeout(() => { timer = null; refresh(); }, 5000); },
    stop: () => clearTimeout(timer),
  };
}

// Dead letters: jobs that used up their attempts (status ERROR with attempt >= max_attempts),
// selected by the store (`GET /async/jobs?dead=true`), 50 a page, each read with only the members
// a row shows (`fields`, as ROW_FIELDS): whole jobs of megabytes would end a page at 4 MiB, a few
// rows (and "Retry all shown" would retry those few).
const DEAD_FIELDS = "id,type,status,attempt,max_attempts,finished_at,error,updated_at";
async function deadLetters(params, signal) {
  const type = params.get("type") || "";
  const body = h("tbody", { id: "rows" });
  const pager = h("div", { class: "pager" });
  const note = h("p", { class: "muted", id: "dead-note" });
  const total = h("p", { id: "dead-total", role: "status" });
  async function countAll() {
    try {
      const d = await api(`/async/dead_letters${type ? `?type=${encodeURIComponent(type)}` : ""}`);
      setText(total, `${d.count} dead letter${d.count === 1 ? "" : "s"} in all${type ? ` of types ${type}` : ""}.`);
      total.dataset.count = d.count;
    } catch (e) {
      setText(total, `The count is not available (${e.message}).`);
    }
  }
  const actions = h("div", { class: "actions" });
  let cursors = [""]; // the cursors of the pages up to the one on screen (set when it is drawn)
  let shown = [];
  let nextCursor = null;
  const form = h("form", { class: "filters", role: "search", onsubmit: (ev) => {
      ev.preventDefault();
      const v = ev.target.type.value.trim();
      location.hash = v ? `#/dead?type=${encodeURIComponent(v)}` : "#/dead";
    } },
    h("label", {}, "Type ", h("input", { name: "type", id: "f-type", value: type, placeholder: "glob, e.g. report.*" })),
    h("button", { type: "submit" }, "Filter"));
  const pickAll = h("input", { type: "checkbox", id: "pick-all", "aria-label": "select all shown",
    onchange: (ev) => body.querySelectorAll(".pick").forEach((c) => { c.checked = ev.target.checked; }) });
  main.replaceChildren(h("h1", {}, "Dead letters"),
    h("p", { class: "muted" }, "Jobs that ended ERROR with every attempt used. Retry gives a job one more attempt."),
    form, total, actions, note,
    h("div", { class: "scroll" }, h("table", { class: "jobs" }, h("thead", {}, h("tr", {},
      h("th", {}, pickAll),
      h("th", {}, "Job"), h("th", {}, "Type"), h("th", {}, "Status"), h("th", {}, "Attempt"), h("th", {}, "Ended"), h("th", {}, "Error"))), body)),
    pager);

  async function retry(ids, none) {
    if (!ids.length) return toast(none);
    const results = [];
    // A few at a time: a long list must not open hundreds of requests at once.
    for (let i = 0; i < ids.length; i += 8) {
      results.push(...await Promise.allSettled(ids.slice(i, i + 8).map((id) => api(`/async/jobs/${id}/retry`, { method: "POST" }))));
    }
    const failed = results.filter((r) => r.status === "rejected");
    toast(`retry: ${ids.length - failed.length} queued${failed.length ? `, ${failed.length} refused (${failed[0].reason.message})` : ""}`);
    await Promise.all([load(wanted), countAll()]).catch((e) => toast(e.message));
  }
  // An empty page with a next_cursor is one the store's scan bound cut (docs/api.md: `dead` is
  // checked record by record, at most 10,000 a read), not the end: it said "No dead letter." over
  // "3 dead letters in all" (probe s53a, F3). Worded as the jobs table's.
  const empty = () => h("tr", {}, h("td", { colspan: 7, class: "muted" },
    nextCursor ? "No dead letter among the jobs searched so far: go on with Older." : "No dead letter."));
  function say() {
    note.textContent = `${shown.length} shown${nextCursor ? "; older ones on the next page" : ""}.`;
    note.className = "muted";
  }
  if (auth.can("jobs:submit")) {
    actions.append(
      h("button", { id: "retry-selected", onclick: once(() => retry([...body.querySelectorAll(".pick:checked")].map((c) => c.value), "Select jobs first.")) }, "Retry selected"),
      h("button", { id: "retry-all", onclick: once(() => retry(shown.map((j) => j.id), "No dead letter shown.")) }, "Retry all shown"));
  }

  const during = new Set(); // the events of each load on its way (as liveStatus, app.js)
  // A status event on a row, unless the row is newer (as liveStatus): a job no longer a dead letter
  // (retried elsewhere, through the API or another tab: QUEUED, STARTING, RUNNING, then how its new
  // attempt ends) leaves the list and "Retry all shown". It stayed with its badge changed (SUCCESS),
  // its old attempt and error, and "Retry all shown" retried it too, refused (probe s53a, F5).
  // Jobs whose rows left the list: one that fails again is a dead letter again (a retry sets
  // its `max_attempts` to the new attempt), and the page is read again for it (`refill`, with the
  // count's re-read, at most every 5 s); it left for good (review rev53c).
  const left = new Set();
  let refill = false;
  function apply(ev) {
    const row = body.querySelector(`tr[data-job="${CSS.escape(ev.job_id)}"]`);
    if (!row) {
      if (ev.runyard_status === "ERROR" && left.delete(ev.job_id)) refill = true;
      return;
    }
    if (before(ev.ts, row.dataset.updated)) return;
    if (ev.ts) row.dataset.updated = ev.ts;
    if (ev.runyard_status === "ERROR" && !(ev.attempt > Number(row.dataset.attempt))) {
      row.children[3].replaceChildren(badge(ev.runyard_status));
      return;
    }
    if (ev.runyard_status === "ERROR") refill = true; // a new attempt's: read its row again
    left.add(ev.job_id);
    row.remove();
    shown = shown.filter((j) => j.id !== ev.job_id);
    if (!shown.length) body.append(empty());
    pickAll.checked = shown.length > 0 && !body.querySelector(".pick:not(:checked)");
    if (note.className !== "error") say(); // a failed re-read's note stays until one succeeds
  }
  // Only the latest load is drawn: an earlier one whose answer comes after it is not (a resync's
  // re-read of this page answered after "Older" turned it showed the rows of the page left, under
  // the pager of the new one). `latest`: the latest load's outcome.
  let loads = 0;
  let latest = Promise.resolve(true);
  // The pages of the latest load: a re-read (a resync, after a retry) reads that page, so a page
  // turn on its way is not undone by a re-read of the page it leaves (review rev53c).
  let wanted = cursors;
  // Reads and draws the last page of `list` (the cursors up to it, which become `cursors` when it
  // is drawn: a page that fails to come, or whose load a later one replaced, leaves the pager as
  // it is). Resolves true once drawn, false when a later load replaced it; a failure rejects.
  // `keep`: the same page read again (a resync): the rows still on it stay selected.
  function load(list, keep) {
    const mine = ++loads;
    wanted = list;
    latest = draw(mine, list, keep);
    return latest;
  }
  async function draw(mine, list, keep) {
    const cursor = list[list.length - 1];
    const kept = new Set(keep ? [...body.querySelectorAll(".pick:checked")].map((c) => c.value) : []);
    const q = new URLSearchParams({ dead: "true", limit: "50", fields: DEAD_FIELDS });
    if (type) q.set("type", type);
    if (cursor) q.set("cursor", cursor);
    const seen = [];
    during.add(seen);
    let page;
    // A later load's page is the one shown: this one's answer, or its failure, changes nothing.
    try { page = await api(`/async/jobs?${q}`); } catch (e) { if (mine !== loads) return false; wanted = cursors; throw e; } finally { during.delete(seen); }
    if (mine !== loads) return false;
    cursors = list;
    const found = page.jobs;
    const next = page.next_cursor;
    shown = found;
    nextCursor = next;
    body.replaceChildren(...found.map((j) => h("tr", { "data-job": j.id, "data-updated": j.updated_at, "data-attempt": j.attempt },
      h("td", {}, h("input", { type: "checkbox", class: "pick", value: j.id, "aria-label": `select ${j.id}`, checked: kept.has(j.id) })),
      h("td", {}, h("a", { href: `#/job/${j.id}`, class: "mono" }, j.id.slice(0, 8) + "…")),
      h("td", {}, j.type), h("td", {}, badge(j.status)), h("td", {}, `${j.attempt}/${j.max_attempts}`),
      h("td", { title: j.finished_at || "" }, ago(j.finished_at)), h("td", { class: "error" }, (j.error || "").slice(0, 160)))));
    // Events that came while the page was read, on the rows they are newer than.
    seen.forEach(apply);
    if (!found.length) body.append(empty());
    // New rows come unselected: so does "select all shown" (unless every row is selected still).
    pickAll.checked = shown.length > 0 && shown.every((j) => kept.has(j.id));
    say();
    pager.replaceChildren(
      // Through once(), as the actions: a double click turns one page (it pushed the same
      // cursor twice, and "Newer" then took two clicks); a page that fails to come is said, and
      // the list of cursors stays the page's on screen.
      cursors.length > 1 ? h("button", { id: "prev-page", onclick: once(async () => {
        try { await load(cursors.slice(0, -1)); } catch (e) { toast(e.message); }
      }) }, "← Newer") : "",
      nextCursor ? h("button", { id: "next-page", onclick: once(async () => {
        try { await load([...cursors, nextCursor]); } catch (e) { toast(e.message); }
      }) }, "Older →") : "");
    return true;
  }
  await Promise.all([countAll(), load(cursors).catch((e) => body.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "error" }, e.message))))]);
  if (signal.aborted) return;
  // Rows on screen follow their jobs: a retried one leaves the list (apply), and the count is read
  // again after an event that may change it (at most every 5 s, as the overview's). After a resync
  // (events the stream had not sent were trimmed) the page and the count are read again.
  // A re-read that fails (the rows on screen may be stale: their events were trimmed) says so
  // and is tried again, 2 s doubling to 30 s, until it succeeds or the page goes.
  let again = null;
  const reread = async (wait) => {
    clearTimeout(again); again = null;
    if (signal.aborted) return;
    try {
      // A re-read a later load replaced (a page turned meanwhile) succeeds or fails with it: a
      // failed page turn left the rows of before the resync, with no note and no retry.
      await Promise.all([load(wanted, true).then((drawn) => drawn || latest), countAll()]);
    } catch (e) {
      if (signal.aborted) return;
      setText(note, `The dead letters could not be read again (${e.message}); the rows shown may be out of date. Trying again in ${wait / 1000} s.`);
      note.className = "error";
      clearTimeout(again); // two re-reads that failed together leave one timer
      again = setTimeout(() => reread(Math.min(wait * 2, 30000)), wait);
    }
  };
  let recount = null;
  whenLeft(signal, () => { clearTimeout(again); clearTimeout(recount); });
  whenLeft(signal, onEvent((ev) => {
    if (ev.type === "resync") return reread(2000);
    if (changesDeadLetters(ev) && !recount) {
      recount = setTimeout(() => {
        recount = null;
        if (refill) { refill = false; reread(2000); } else countAll();
      }, 5000);
    }
    if (!ev.job_id || !ev.runyard_status) return;
    during.forEach((d) => d.push(ev));
    apply(ev);
  }));
}
