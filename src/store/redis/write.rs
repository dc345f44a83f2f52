//! A job write as `lua/commit.lua` receives it: its named values, its own keys and the shared
//! keys it touches, chosen in Rust so that each kind of write declares only what it changes
//! (see the script's header).

use std::collections::BTreeSet;

use super::*;

impl RedisStore {
    /// [`Write::new`] in the form this store writes job records in (`store.records`).
    pub(super) fn write(
        &self,
        expected: Option<u64>,
        old: Option<&Job>,
        job: Job,
        ev: Option<EventKind>,
    ) -> Result<Write> {
        let mut w = Write::new(expected, old, job, ev, self.s.compact_records)?;
        // A job that becomes QUEUED may go to a parked worker (handover.rs).
        w.hand = self.s.handover
            && w.job.status == JobStatus::Queued
            && w.old_status != Some(JobStatus::Queued);
        Ok(w)
    }
}

/// One job write for `commit.lua`.
pub(super) struct Write {
    /// The version the job had when loaded; `None` for a new job.
    pub(super) expected: Option<u64>,
    pub(super) job: Job,
    pub(super) body: String,
    pub(super) files: String,
    /// The hashes of the files `old` held and the job no longer does (space separated, '' none):
    /// the job's references to them go (`fgone` in commit.lua).
    pub(super) files_gone: String,
    pub(super) event: Option<(EventKind, String)>,
    /// The lease set already holds this job's lease expiry (active before and after, same
    /// expiry): `commit.lua` skips the write. Sound because the write only applies at the
    /// version it was computed from.
    pub(super) lease_kept: bool,
    /// The webhook delivery of the event (`created_at` µs, newline, url), '' none: see
    /// `deliveries.rs`.
    pub(super) delivery: String,
    /// The status of the job at version `expected` (`None` for a submit): the index keys it
    /// leaves are declared to `commit.lua`.
    pub(super) old_status: Option<JobStatus>,
    /// A claim of a job `lua/claim.lua` popped from its runner's queue at version `expected`:
    /// the queue entry is gone already.
    pub(super) popped: bool,
    /// An event of an earlier change of the job made in this same write, appended right before
    /// `event` (`event0`): an attempt's start carried by the write of its finish (see
    /// `start.rs`), with its webhook delivery (`dlv0`, '' none).
    pub(super) event0: Option<(EventKind, String)>,
    pub(super) delivery0: String,
    /// The job becomes QUEUED and may be handed over to a parked worker instead of queued
    /// (`hand` in commit.lua, see handover.rs): the park keys, the token counter and the lease
    /// set are declared.
    pub(super) hand: bool,
    /// The runner whose queue a QUEUED job leaves for another's (`Command::Reroute`): its entry
    /// there goes (`qold` in commit.lua).
    pub(super) left_queue: Option<String>,
}

impl Write {
    /// The write of `job` (at version `expected`, `old` as loaded); `compact`: its record in the
    /// inline compact form (`store.records = "compact"`, `store/job_record.rs`), else the
    /// job's JSON.
    pub(super) fn new(
        expected: Option<u64>,
        old: Option<&Job>,
        job: Job,
        ev: Option<EventKind>,
        compact: bool,
    ) -> Result<Self> {
        let body = if compact {
            crate::store::job_record::compact(&job, true)?
        } else {
            serde_json::to_string(&job).map_err(json_err)?
        };
        let (files, files_gone) = file_changes(old, &job);
        let event = match ev {
            Some(kind) => {
                let ev = Event::for_job(&job, kind);
                let body = if compact {
                    crate::store::event_record::compact(&ev, job.updated_at, true)?
                } else {
                    serde_json::to_string(&ev).map_err(json_err)?
                };
                Some((kind, body))
            }
            None => None,
        };
        let lease_kept = expected.is_some()
            && old.is_some_and(|o| lease_of(o).is_some() && lease_of(o) == lease_of(&job));
        let delivery = deliveries::commit_arg(&job, ev);
        Ok(Self {
            expected,
            body,
            files,
            files_gone,
            event,
            lease_kept,
            delivery,
            old_status: old.map(|o| o.status),
            popped: false,
            event0: None,
            delivery0: String::new(),
            hand: false,
            left_queue: old
                .filter(|o| o.status == JobStatus::Queued && o.runner != job.runner)
                .map(|o| o.runner.clone()),
            job,
        })
    }

    /// What `commit.lua` receives for this write: its named values, its own keys and the shared
    /// keys it touches (see the script's header). Only what this kind of write changes is
    /// declared: a heartbeat names its job and the lease set, nothing else. `prefix` is the
    /// store's key prefix; `ttl`: refresh the channel's TTL with the event (see
    /// [`RedisStore::ttl_due`] and `chan_ttl` in commit.lua); `list`: the event goes to the
    /// channel's list, not its stream (`store.channel_events`).
    pub(super) fn parts<'a>(&self, prefix: &'a str, ttl: bool, list: bool) -> Parts<'a> {
        let j = &self.job;
        let old = self.old_status;
        let st = j.status;
        let mut p = Parts::new(
            prefix,
            self.body.len()
                + self.event.as_ref().map_or(0, |(_, e)| e.len())
                + self.event0.as_ref().map_or(0, |(_, e)| e.len()),
        );
        p.val("id", j.id);
        if let Some(v) = self.expected {
            p.val("v", v);
        }
        p.val("nv", j.version);
        p.val("st", st.as_str());
        p.val("r", &j.runner);
        p.val("c", &j.channel_id);
        p.val("q", j.queued_at);
        p.val("t", &j.job_type);
        p.val("b", &self.body);
        p.own("job", "job:", j.id);
        if self.expected.is_none() {
            p.shared(ALL);
            if let Some(k) = &j.idempotency_key {
                p.val("idem", k);
                p.own("idem", "idem:", k);
            }
        }
        self.index_parts(&mut p, old, st);
        if !self.files.is_empty() {
            p.val("files", &self.files);
            p.shared(FHASHES);
            for h in self.files.split_whitespace() {
                p.own("fref", "fref:", h);
            }
        }
        if !self.files_gone.is_empty() {
            p.val("fgone", &self.files_gone);
            p.shared(FHASHES);
            for h in self.files_gone.split_whitespace() {
                p.own("fgone", "fref:", h);
            }
        }
        self.wait_parts(&mut p);
        if st == JobStatus::Success
            && old != Some(JobStatus::Success)
            && !j.emits.is_empty()
            && j.finished_at.is_some()
        {
            p.val("emits", j.emits.join("\n"));
            p.shared(SIGSEQ);
            p.shared(SIGKEYS);
            p.shared(WAITGEN);
            p.shared(WAITDUE);
            for k in &j.emits {
                p.own("sig", "sig:", k);
                p.own("sigid", "sigid:", k);
                p.own("sigidt", "sigidt:", k);
                p.own("sigw", "waitk:", k);
            }
        }
        self.event_parts(&mut p, ttl, list);
        p
    }

    /// The write's events and their webhook deliveries: the global stream, and the channel's
    /// stream as builds before the list wrote it (with `ttl` the refresh of its TTL), or with
    /// `list` the channel's list (with `ttl` the refresh of its TTL and of the stream's, declared
    /// then) and `P:evlsince` (set by a push that creates a list: see events.lua).
    fn event_parts(&self, p: &mut Parts<'_>, ttl: bool, list: bool) {
        if self.event.is_some() || self.event0.is_some() {
            p.shared(EV);
            p.shared(EVWANT);
            let ch = &self.job.channel_id;
            if !list {
                p.own("evc", "evc:", ch);
            } else {
                p.shared(EVLSINCE);
                p.own("evl", "evl:", ch);
            }
            if ttl {
                p.val("ttl", 1);
                if list {
                    p.own("evc", "evc:", ch);
                }
            }
            let mut dlv = false;
            for (name, ev, dname, d) in [
                ("event0", &self.event0, "dlv0", &self.delivery0),
                ("event", &self.event, "dlv", &self.delivery),
            ] {
                if let Some((_, ev)) = ev {
                    p.val(name, ev);
                    if !d.is_empty() {
                        p.val(dname, d);
                        dlv = true;
                    }
                }
            }
            if dlv {
                p.shared(DLVSEQ);
                p.shared(DLVPEND);
                p.shared(DLVEPS);
                p.own("djob", "dlv:job:", self.job.id);
                // Both deliveries of a write go to the job's one webhook.
                let d = if self.delivery.is_empty() {
                    &self.delivery0
                } else {
                    &self.delivery
                };
                p.own("dlvep", "dlv:ep:", deliveries::endpoint_id_of_arg(d));
            }
        }
    }

    /// The index entries the write moves: counts, status indexes, queues, leases, finished.
    fn index_parts(&self, p: &mut Parts, old: Option<JobStatus>, st: JobStatus) {
        let j = &self.job;
        if old != Some(st) {
            p.shared(JC);
            if let Some(o) = old.filter(|o| !o.is_active()) {
                p.own("stold", "st:", o.as_str());
            }
            if !st.is_active() {
                p.own("stnew", "st:", st.as_str());
            }
        }
        let queued = st == JobStatus::Queued;
        let was_queued = old == Some(JobStatus::Queued);
        if queued || was_queued {
            p.own("qt", "qt:", &j.job_type);
        }
        // A claim's pick was popped from the runner's queue by claim.lua at this same version.
        if queued || (was_queued && !self.popped) {
            p.own("q", "q:", &j.runner);
        }
        if let Some(r) = &self.left_queue {
            p.own("qold", "q:", r);
        }
        if self.hand {
            p.own("park", "park:", &j.runner);
            p.own("parkn", "parkn:", &j.runner);
            p.own("tok", "token", "");
            p.shared(LEASE);
        }
        if (st == JobStatus::Scheduled && j.run_at.is_some()) || old == Some(JobStatus::Scheduled) {
            p.shared(SCHED);
            if let Some(at) = j.run_at.filter(|_| st == JobStatus::Scheduled) {
                p.val("runat", at);
            }
        }
        match lease_of(j) {
            // Active before and after with the same expiry: the entry is already there.
            Some(_) if self.lease_kept => {}
            Some(e) => {
                p.shared(LEASE);
                p.val("lease", e);
            }
            // No lease (or not active nor cancelled): out of the lease set (a claim reservation
            // too, see claim.lua).
            None if self.expected.is_some() => p.shared(LEASE),
            None => {}
        }
        if let Some(f) = j.finished_at {
            p.shared(FIN);
            p.val("fin", f);
        } else if old.is_some_and(JobStatus::is_terminal) {
            p.shared(FIN);
        }
    }

    /// A job that starts or stops waiting enters or leaves the wait indexes (`P:waitk:{key}` per
    /// key of its wait).
    fn wait_parts(&self, p: &mut Parts) {
        let j = &self.job;
        let waiting = j.status == JobStatus::Waiting;
        if waiting == (self.old_status == Some(JobStatus::Waiting)) {
            return;
        }
        p.val("wait", if waiting { "enter" } else { "leave" });
        if waiting {
            if let Some(dl) = j.wait.as_ref().and_then(|w| w.deadline) {
                p.val("dl", dl);
                p.shared(WAITDL);
            }
            p.shared(WAITGEN);
        } else {
            p.shared(WAITDL);
        }
        p.shared(WAITDUE);
        for i in j.wait.iter().flat_map(|w| &w.items) {
            p.own("waitk", "waitk:", &i.key);
        }
    }
}

/// The file hashes `job` holds when they changed since `old` ('' otherwise), and those `old`
/// held that `job` no longer does (a new attempt dropped the last one's uploads), space separated.
fn file_changes(old: Option<&Job>, job: &Job) -> (String, String) {
    if old.is_some_and(|o| o.files == job.files) {
        return (String::new(), String::new());
    }
    let hashes = |j: &Job| -> BTreeSet<String> {
        j.files.values().flatten().map(|f| f.hash.clone()).collect()
    };
    let now = hashes(job);
    let gone = old.map(hashes).unwrap_or_default();
    let join = |set: Vec<&String>| {
        set.into_iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    };
    (
        join(now.iter().collect()),
        join(gone.difference(&now).collect()),
    )
}

/// The lease expiry of a job in the lease set: an active job's, and a cancelled one's while its
/// worker keeps the lease to stop the work (the reaper finds it there once it runs out,
/// `lua/expired.lua`); none otherwise.
fn lease_of(j: &Job) -> Option<Micros> {
    j.lease
        .as_ref()
        .filter(|_| j.status.is_active() || j.status == JobStatus::Cancelled)
        .map(|l| l.expires_at)
}

/// The shared keys (`shared` in commit.lua): their names in the script, their key after the
/// prefix; bit `i` of a [`Parts::shared`] mask is entry `i`.
pub(super) const SHARED: [(&str, &str); 17] = [
    ("all", "all"),
    ("jc", "jc"),
    ("lease", "lease"),
    ("fin", "fin"),
    ("sched", "sched"),
    ("fhashes", "fhashes"),
    ("waitdl", "waitdl"),
    ("waitdue", "waitdue"),
    ("waitgen", "waitgen"),
    ("sigseq", "sigseq"),
    ("sigkeys", "sigkeys"),
    ("dlvseq", "dlv:seq"),
    ("dlvpend", "dlv:pend"),
    ("dlveps", "dlv:eps"),
    ("ev", "ev"),
    ("evwant", "evwant"),
    ("evlsince", "evlsince"),
];
const ALL: usize = 0;
const JC: usize = 1;
const LEASE: usize = 2;
const FIN: usize = 3;
const SCHED: usize = 4;
const FHASHES: usize = 5;
const WAITDL: usize = 6;
const WAITDUE: usize = 7;
const WAITGEN: usize = 8;
const SIGSEQ: usize = 9;
const SIGKEYS: usize = 10;
pub(super) const DLVSEQ: usize = 11;
const DLVPEND: usize = 12;
const DLVEPS: usize = 13;
const EV: usize = 14;
const EVWANT: usize = 15;
const EVLSINCE: usize = 16;

/// Arguments packed in one buffer, each argument's end kept: a write's name/value pairs or its
/// keys, copied once into the `commit.lua` call (see `commit.rs`), without a string per
/// argument on the way.
#[derive(Default)]
pub(super) struct Packed {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Packed {
    fn with_capacity(args: usize, bytes: usize) -> Self {
        Self {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(args),
        }
    }

    /// Appends one argument.
    fn push(&mut self, arg: &[u8]) {
        self.data.extend_from_slice(arg);
        self.end();
    }

    /// Ends the argument written into `data` since the last end.
    fn end(&mut self) {
        self.ends.push(self.data.len());
    }

    /// Appends the arguments of `other`, in order.
    pub(super) fn extend(&mut self, other: &Packed) {
        let base = self.data.len();
        self.data.extend_from_slice(&other.data);
        self.ends.extend(other.ends.iter().map(|e| e + base));
    }

    /// The arguments, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let a = &self.data[start..end];
            start = end;
            a
        })
    }

    /// How many arguments.
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Their bytes, all together.
    pub(super) fn bytes(&self) -> usize {
        self.data.len()
    }

    /// The arguments as strings (tests and the fuzz targets' [`commit_args`]).
    fn strings(&self) -> Vec<String> {
        self.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }
}

/// One write as `commit.lua` receives it (see [`Write::parts`]).
pub(super) struct Parts<'a> {
    /// Name/value pairs, flat.
    args: Packed,
    /// The write's own keys, in the order of `names`.
    keys: Packed,
    /// The names of the keys the write touches (its `keys` value).
    names: String,
    /// The shared keys it touches, a bit per [`SHARED`] entry.
    shared: u32,
    prefix: &'a str,
}

impl<'a> Parts<'a> {
    fn new(prefix: &'a str, body: usize) -> Self {
        Self {
            args: Packed::with_capacity(48, body + 512),
            keys: Packed::with_capacity(8, 8 * (prefix.len() + 48)),
            names: String::with_capacity(48),
            shared: 0,
            prefix,
        }
    }

    /// A name/value pair; the value as `Display` writes it (a string as it is).
    fn val(&mut self, name: &str, v: impl std::fmt::Display) {
        use std::io::Write as _;
        self.args.push(name.as_bytes());
        // Writing into a Vec cannot fail.
        let _ = write!(self.args.data, "{v}");
        self.args.end();
    }

    fn name(&mut self, name: &str) {
        if !self.names.is_empty() {
            self.names.push(' ');
        }
        self.names.push_str(name);
    }

    /// A key of this write, `P:{kind}{rest}`, named `name`.
    fn own(&mut self, name: &str, kind: &str, rest: impl std::fmt::Display) {
        use std::io::Write as _;
        self.name(name);
        let k = &mut self.keys.data;
        k.extend_from_slice(self.prefix.as_bytes());
        k.push(b':');
        k.extend_from_slice(kind.as_bytes());
        // Writing into a Vec cannot fail.
        let _ = write!(k, "{rest}");
        self.keys.end();
    }

    /// A shared key this write touches.
    fn shared(&mut self, i: usize) {
        if self.shared & (1 << i) == 0 {
            self.shared |= 1 << i;
            self.name(SHARED[i].0);
        }
    }

    /// The pairs with the `keys` value last, the write's own keys and its shared keys.
    pub(super) fn into_packed(mut self) -> (Packed, Packed, u32) {
        let names = std::mem::take(&mut self.names);
        self.val("keys", names);
        (self.args, self.keys, self.shared)
    }

    /// [`Self::into_packed`] as strings.
    pub(super) fn into_args(self) -> (Vec<String>, Vec<String>, u32) {
        let (a, k, sh) = self.into_packed();
        (a.strings(), k.strings(), sh)
    }
}

/// The shared keys of the store (built once: they depend on its prefix only) and the two
/// prefixes every call may pass.
pub(super) struct SharedKeys {
    pub(super) keys: [String; 17],
    pub(super) dlv_prefix: String,
    pub(super) notices: String,
    /// `P:hand:`, the prefix of the hand-over lists (handover.rs).
    pub(super) hand_prefix: String,
}

impl SharedKeys {
    pub(super) fn new(prefix: &str) -> Self {
        let key = |k: &str| format!("{prefix}:{k}");
        Self {
            keys: SHARED.map(|(_, k)| key(k)),
            dlv_prefix: key("dlv:"),
            notices: key("notices"),
            hand_prefix: key("hand:"),
        }
    }
}

/// The name/value pairs `commit.lua` receives for one job write (see the script's header):
/// `job` as changed from `old` (loaded at version `expected`; both `None` for a submit), with
/// the event of kind `ev`, the job record and the event as their JSON, or in the compact forms
/// with `compact` (`store.records`). Exposed for the fuzz targets
/// (`fuzz/fuzz_targets/redis_codec.rs`), which decode them back with
/// [`super::read_job_record`] and [`read_event_record`].
pub fn commit_args(
    expected: Option<u64>,
    old: Option<&Job>,
    job: &Job,
    ev: Option<EventKind>,
    compact: bool,
) -> Result<Vec<(String, String)>> {
    let (args, _, _) = Write::new(expected, old, job.clone(), ev, compact)?
        .parts("P", true, false)
        .into_args();
    let mut it = args.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// An event as every node reads it (either form), its id empty. For the fuzz targets.
pub fn read_event_record(body: &str) -> Result<Event> {
    crate::store::event_record::read_inline(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::wait::Wait;
    use crate::job::Lease;

    /// The names a write declares, split into its own keys and the shared ones (channel events
    /// to streams, the default).
    fn declared(w: &Write, ttl: bool) -> (Vec<String>, Vec<&'static str>, Vec<String>) {
        declared_in(w, ttl, false)
    }

    /// [`declared`], channel events to lists with `list`.
    fn declared_in(
        w: &Write,
        ttl: bool,
        list: bool,
    ) -> (Vec<String>, Vec<&'static str>, Vec<String>) {
        let p = w.parts("P", ttl, list);
        let shared = SHARED
            .iter()
            .enumerate()
            .filter(|(i, _)| p.shared & (1 << i) != 0)
            .map(|(_, (n, _))| *n)
            .collect();
        let (args, keys, _) = p.into_args();
        let names = args.chunks(2).map(|c| c[0].clone()).collect();
        (keys, shared, names)
    }

    fn active(status: JobStatus, expires_at: Micros) -> Job {
        Job {
            status,
            lease: Some(Lease {
                worker: "w".into(),
                token: 7,
                expires_at,
            }),
            ..Job::new("t", "r", 1)
        }
    }

    #[test]
    fn a_heartbeat_declares_its_job_and_the_lease_set_only() {
        let old = active(JobStatus::Running, 100);
        let mut next = old.clone();
        next.lease.as_mut().unwrap().expires_at = 200;
        next.version += 1;
        let w = Write::new(Some(old.version), Some(&old), next.clone(), None, false).unwrap();
        let (keys, shared, names) = declared(&w, true);
        assert_eq!(keys, [format!("P:job:{}", next.id)]);
        assert_eq!(shared, ["lease"]);
        assert!(names.contains(&"lease".to_string()));
        assert!(!names
            .iter()
            .any(|n| n == "event" || n == "ttl" || n == "idem"));
        // Same expiry (e.g. progress without a renewal): not even the lease set.
        let w = Write::new(Some(old.version), Some(&old), old.clone(), None, false).unwrap();
        let (keys, shared, _) = declared(&w, true);
        assert_eq!((keys.len(), shared.len()), (1, 0));
    }

    #[test]
    fn a_submit_declares_its_indexes_queue_and_event() {
        let mut j = Job::new("t", "r", 1);
        j.idempotency_key = Some("k".into());
        let w = Write::new(None, None, j.clone(), Some(EventKind::Status), false).unwrap();
        let (keys, shared, names) = declared(&w, true);
        let id = j.id;
        let mut own: Vec<String> = vec![
            format!("P:job:{id}"),
            "P:idem:k".into(),
            "P:st:QUEUED".into(),
            "P:qt:t".into(),
            "P:q:r".into(),
        ];
        // Streams (the default): the channel's stream, as builds before the list declared it.
        assert_eq!(keys, [own.clone(), vec![format!("P:evc:{id}")]].concat());
        assert_eq!(shared, ["all", "jc", "ev", "evwant"]);
        assert!(
            !names.contains(&"v".to_string()),
            "a submit has no expected version"
        );
        assert!(names.contains(&"ttl".to_string()));
        let (keys, _, names) = declared(&w, false);
        assert_eq!(keys.last(), Some(&format!("P:evc:{id}")));
        assert!(!names.contains(&"ttl".to_string()));
        // Lists: the list, and with a refresh the channel's stream, if any (its TTL
        // refreshed with the list's); `P:evlsince`.
        let (keys, shared, _) = declared_in(&w, true, true);
        own.extend([format!("P:evl:{id}"), format!("P:evc:{id}")]);
        assert_eq!(keys, own);
        assert_eq!(shared, ["all", "jc", "ev", "evwant", "evlsince"]);
        // Without a refresh, no stream key.
        let (keys, _, names) = declared_in(&w, false, true);
        assert_eq!(keys.last(), Some(&format!("P:evl:{id}")));
        assert!(!names.contains(&"ttl".to_string()));
    }

    #[test]
    fn a_claim_of_a_popped_job_leaves_the_runner_queue_alone() {
        let old = Job::new("t", "r", 1);
        let mut next = active(JobStatus::Starting, 100);
        next.id = old.id;
        next.channel_id = old.channel_id.clone();
        next.version = old.version + 1;
        let mut w = Write::new(
            Some(0),
            Some(&old),
            next.clone(),
            Some(EventKind::Status),
            false,
        )
        .unwrap();
        let q = "P:q:r".to_string();
        assert!(declared(&w, true).0.contains(&q));
        w.popped = true;
        let (keys, shared, names) = declared(&w, false);
        assert!(!keys.contains(&q));
        assert!(keys.contains(&"P:st:QUEUED".to_string()) && keys.contains(&"P:qt:t".into()));
        assert_eq!(shared, ["jc", "lease", "ev", "evwant"]);
        assert!(!names.contains(&"ttl".to_string()));
    }

    #[test]
    fn a_job_leaving_a_wait_declares_each_waited_key() {
        let mut old = Job::new("t", "r", 1);
        old.status = JobStatus::Waiting;
        let wait: Wait = serde_json::from_value(serde_json::json!({
            "items": [{"key": "a", "needed": 1}, {"key": "b", "needed": 1}]
        }))
        .unwrap();
        old.wait = Some(wait);
        let mut next = old.clone();
        next.status = JobStatus::Queued;
        let w = Write::new(Some(0), Some(&old), next, Some(EventKind::Status), false).unwrap();
        let (keys, shared, names) = declared(&w, true);
        assert!(keys.contains(&"P:waitk:a".to_string()) && keys.contains(&"P:waitk:b".into()));
        assert!(shared.contains(&"waitdl") && shared.contains(&"waitdue"));
        assert!(names.contains(&"wait".to_string()));
    }
}
