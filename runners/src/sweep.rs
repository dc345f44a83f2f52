//! What a local job leaves behind when it ends: killed by one background sweeper.
//!
//! When a job's first process (its leader) exits, the worker kills the leader's process group at
//! once, as always. What left the group (GNU `timeout`, a `setpgid`, a `setsid` child) lived on;
//! now the job's end hands it here ([`ended`]; a stop does too, once done), and one thread of
//! this process (the **sweeper**, started with the first job that ends) kills it, as a stop's
//! walk would ([`crate::session`]), without making anyone wait: the job's end is recorded
//! meanwhile.
//!
//! The sweeper wakes only when some job has ended, at most every [`PERIOD`], and handles every
//! job that ended since its last round together:
//!
//! - A job started by a spawner: the spawner is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so
//!   whatever a job leaves once its leader is gone is, or descends from, a child of the spawner
//!   that is not a running job's leader. The sweeper reads the spawner's children
//!   (`/proc/PID/task/PID/children`, one small file) and passes over those the server knows as
//!   running jobs: when none is left, or none of those left can be the ended jobs' (by session,
//!   group or marks), `/proc` is not walked. That is the round of nearly every job.
//! - Otherwise (some child of the spawner may be the ended jobs', or a job forked by this process
//!   ended) `/proc` is read once for all of them, and the processes found get `SIGKILL` through a
//!   pidfd checked against their start time (a reused pid is never signalled); `/proc` is read
//!   again until none is left alive, within [`WITHIN`] (what they forked meanwhile).
//!
//! What is a job's, once it has ended ([`leftovers`]):
//! - a process of its session or its group that started no later than the clock tick at which
//!   the job's end was seen, after the reap: the leader's pid names the session, and once the
//!   session has emptied the pid may be reused by a process that leads a new session of the same
//!   id, all of whose members start after that (the guard's resolution is one tick, 10 ms, and a
//!   pid is reused only once the kernel's allocator has gone round all of `pid_max`). While the
//!   pid names a live process again, neither its session nor its group is the job's;
//! - a child of the job's spawner whose environment carries the job's `JOB_ID` and `JOB_ATTEMPT`
//!   while no attempt with those marks runs here ([`Attempt`]): what left the session (`setsid`)
//!   and whose parent then exited, a daemon's double fork included;
//! - every descendant of those by parent pid.
//!
//! Not reached: a process that left the session and whose parent exited, when its environment
//! lost the marks (`env -i`) or cannot be read (a setuid program's, by a server without
//! `CAP_SYS_PTRACE`), or when the job was forked by this process (no spawner left, or an embedder
//! that starts none: such orphans go to init). Nothing at all when `/proc` is not this process's
//! pid namespace's ([`crate::session::proc_is_ours`]).
//!
//! A read of a process's environment is done by a helper thread and waited for up to
//! [`ENV_READ_LIMIT`] ([`EnvReader`]): one that blocks for good (a process that entered
//! uninterruptible sleep after its `stat` was read, stuck holding its memory map's lock) holds the
//! helper, and no marks are read until it answers. The rest of the sweeper is one thread: should
//! it block in the kernel for good (a `/proc` read), ended jobs pile up, at most [`MAX_PENDING`]
//! (the oldest dropped, one WARN a minute at most), and what they leave lives on as before the
//! sweeper existed.
//!
//! `SIGKILL` at once, no `SIGTERM` first: the job has ended, and its group got `SIGKILL` at its
//! end as it always did; a grace period would let what it left work on (and read a later job's
//! secret, `docs/security.md`) after the job was recorded as ended.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::session::{all_processes, read_stat, signal, Member, Stat};

/// The sweeper's rounds are at least this far apart.
pub(crate) const PERIOD: Duration = Duration::from_millis(100);

/// How long one round goes on finding and killing what is left alive (a process stuck in the
/// kernel does not die at once).
const WITHIN: Duration = Duration::from_secs(1);

/// Jobs ended and not yet swept, at most: past this (a sweeper stuck in the kernel) the oldest
/// are dropped, and their leftovers live on as before the sweeper existed.
const MAX_PENDING: usize = 1 << 16;

/// An attempt's marks: the `JOB_ID` and `JOB_ATTEMPT` of its environment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Marks {
    pub job: String,
    pub attempt: u64,
}

impl Marks {
    /// The marks of an environment block (`NAME=value` entries separated by NUL bytes).
    pub(crate) fn of_environ(env: &[u8]) -> Option<Marks> {
        let value = |name: &[u8]| {
            env.split(|b| *b == 0)
                .find_map(|kv| kv.strip_prefix(name))
                .and_then(|v| std::str::from_utf8(v).ok())
        };
        Some(Marks {
            job: value(b"JOB_ID=")?.to_string(),
            attempt: value(b"JOB_ATTEMPT=")?.parse().ok()?,
        })
    }
}

/// A job whose leader has ended and been reaped.
#[derive(Clone, Debug)]
pub(crate) struct Ended {
    /// Its leader's pid: the id of its session and group.
    pub leader: u32,
    /// The clock tick (since boot, as start times are counted) at which its end was seen, after
    /// the reap; `None` when the clock cannot be read in ticks: its session is then not reached.
    pub seen: Option<u64>,
    /// The spawner that started it; `None`: forked by this process.
    pub reaper: Option<u32>,
    /// Its attempt's marks.
    pub marks: Option<Marks>,
}

#[derive(Default)]
struct State {
    pending: VecDeque<Ended>,
    /// The attempts running here, with how many times each (once, but for a relaunch).
    live: HashMap<Marks, usize>,
    /// The sweeper thread runs.
    started: bool,
    /// When the last WARN of a dropped job was, and how many were dropped since.
    behind: Option<(Instant, u64)>,
    /// When the sweeper thread last failed to start (tried again, and warned of, once a
    /// [`WARN_EVERY`]).
    failed: Option<Instant>,
}

/// The sweeper's warnings come at most this often (each is about a state that lasts: a sweeper
/// stuck in the kernel, threads that cannot be made), not once per job.
const WARN_EVERY: Duration = Duration::from_secs(60);

static STATE: LazyLock<Mutex<State>> = LazyLock::new(Mutex::default);
static WAKE: Condvar = Condvar::new();

fn state() -> MutexGuard<'static, State> {
    STATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An attempt running here, from before its start is asked for until its end is handed to
/// [`ended`] (or it is dropped): no process carrying its marks is taken for an ended job's.
pub(crate) struct Attempt {
    marks: Option<Marks>,
    /// The spawner that started it; `None`: forked by this process.
    reaper: Option<u32>,
}

impl Attempt {
    pub(crate) fn register(job: &str, attempt: u32) -> Self {
        let marks = Marks {
            job: job.to_string(),
            attempt: attempt.into(),
        };
        *state().live.entry(marks.clone()).or_default() += 1;
        Attempt {
            marks: Some(marks),
            reaper: None,
        }
    }

    /// The attempt, started by the spawner `spawner`.
    pub(crate) fn by(mut self, spawner: u32) -> Self {
        self.reaper = Some(spawner);
        self
    }
}

fn unregister(st: &mut State, marks: &Marks) {
    if let Some(n) = st.live.get_mut(marks) {
        *n -= 1;
        if *n == 0 {
            st.live.remove(marks);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(m) = self.marks.take() {
            unregister(&mut state(), &m);
        }
    }
}

/// The job led by `leader`, `attempt`, has ended (its leader reaped, by this process or by the
/// spawner that started it): what it left is killed in the background. Returns at once.
pub(crate) fn ended(leader: u32, mut attempt: Attempt) {
    let seen = crate::spawn_vfork::now_tick();
    let mut st = state();
    let (marks, reaper) = (attempt.marks.take(), attempt.reaper);
    if let Some(m) = &marks {
        unregister(&mut st, m);
    }
    if !crate::session::proc_is_ours() {
        return; // No walk can be trusted (see `proc_is_ours`): no sweeper.
    }
    if st.pending.len() >= MAX_PENDING {
        st.pending.pop_front();
        // Warned of at the first drop, then once a minute at most with the count since.
        let dropped = match &mut st.behind {
            Some((at, n)) if at.elapsed() < WARN_EVERY => {
                *n += 1;
                None
            }
            behind => {
                let n = (*behind).map_or(1, |(_, n)| n + 1);
                *behind = Some((Instant::now(), 0));
                Some(n)
            }
        };
        if let Some(n) = dropped {
            tracing::warn!(
                dropped = n,
                "the sweeper of ended local jobs is behind (stuck in the kernel?): the oldest \
                 jobs are dropped, what they left lives on"
            );
        }
    }
    // The sweeper waits only while nothing is pending: woken by the first job of a round.
    let wake = st.pending.is_empty();
    st.pending.push_back(Ended {
        leader,
        seen,
        reaper,
        marks,
    });
    if !st.started && st.failed.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
        match std::thread::Builder::new()
            .name("runyard-sweeper".into())
            .spawn(run)
        {
            Ok(_) => st.started = true,
            Err(e) => {
                st.failed = Some(Instant::now());
                tracing::warn!(
                    error = %e,
                    "cannot start the sweeper of ended local jobs (tried again in a minute)"
                );
            }
        }
    }
    if wake {
        WAKE.notify_one();
    }
}

/// The sweeper: one round per [`PERIOD`] at most, while jobs end.
fn run() {
    let mut marks = MarksCache::default();
    let mut last: Option<Instant> = None;
    // The jobs of the last round that needed no walk: looked at once more in the next round (a
    // spawner's list of children can miss one, see `children_of`).
    let mut again: Vec<Ended> = Vec::new();
    loop {
        {
            let mut st = state();
            while st.pending.is_empty() && again.is_empty() {
                st = WAKE
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
        if let Some(t) = last {
            std::thread::sleep(PERIOD.saturating_sub(t.elapsed()));
        }
        last = Some(Instant::now());
        let new = std::mem::take(&mut state().pending);
        let jobs: Vec<Ended> = again.drain(..).chain(new.iter().cloned()).collect();
        if needs_walk(&jobs, &mut marks) {
            let killed = kill_leftovers(&jobs, &mut marks, WITHIN);
            if killed > 0 {
                tracing::debug!(processes = killed, "killed what ended local jobs left");
            }
        } else {
            again = new.into();
        }
        if marks.0.len() > 4096 {
            marks.0.clear();
        }
    }
}

/// The marks of the spawners' children read so far, by pid and start time, and the reader of
/// their environments.
struct MarksCache(HashMap<(u32, u64), Option<Marks>>, EnvReader);

impl Default for MarksCache {
    fn default() -> Self {
        MarksCache(HashMap::new(), EnvReader::new(read_environ))
    }
}

impl MarksCache {
    /// The marks of a process; `None` when it has none or its environment cannot be read (one
    /// in uninterruptible sleep is not read: the read could wait for good; nor is any while a
    /// read has not answered, [`EnvReader`]: not kept, read again next time).
    fn of(&mut self, s: &Stat) -> Option<Marks> {
        if s.disk_wait {
            return None;
        }
        if let Some(m) = self.0.get(&(s.pid, s.start)) {
            return m.clone();
        }
        let env = self.1.read(s.pid)?;
        let marks = env.as_deref().and_then(Marks::of_environ);
        self.0.insert((s.pid, s.start), marks.clone());
        marks
    }
}

fn read_environ(pid: u32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ")).ok()
}

/// A process's environment block, `None` when it cannot be read.
type Environ = Option<Vec<u8>>;

/// How long the sweeper waits for one read of a process's environment (microseconds, normally).
const ENV_READ_LIMIT: Duration = Duration::from_millis(500);

/// Reads of `/proc/PID/environ` done by one helper thread, each waited for up to
/// [`ENV_READ_LIMIT`]: a read that blocks for good (a process that entered uninterruptible sleep
/// after its `stat` was read, holding its memory map's lock) holds the helper, not the sweeper.
/// Until that read answers no environment is read (the marks are unknown: the process is not
/// taken for an ended job's, as one whose environment cannot be read).
struct EnvReader {
    read: fn(u32) -> Option<Vec<u8>>,
    /// Where a pid is asked for, and where its environment comes back.
    helper: Option<(SyncSender<u32>, Receiver<Environ>)>,
    /// A read has not answered in time, and has not answered since.
    late: bool,
    /// When "an environment read does not answer" was last logged ([`WARN_EVERY`]).
    warned: Option<Instant>,
}

impl EnvReader {
    /// Says (once a minute at most) that a read is stuck: meanwhile leftovers found only by their
    /// marks are not found (their sessions and descendants still are).
    fn warn_late(&mut self) {
        if self.warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            self.warned = Some(Instant::now());
            tracing::warn!(
                "a process's environment read does not answer (a process stuck in the kernel): until it does, what ended jobs left outside their session is not found by its marks"
            );
        }
    }

    fn new(read: fn(u32) -> Option<Vec<u8>>) -> Self {
        EnvReader {
            read,
            helper: None,
            late: false,
            warned: None,
        }
    }

    /// The environment of `pid` (`Some(None)`: unreadable), `None` when the read did not answer
    /// within [`ENV_READ_LIMIT`] or an earlier one still has not.
    fn read(&mut self, pid: u32) -> Option<Option<Vec<u8>>> {
        if self.helper.is_none() {
            let (ask, asked) = sync_channel::<u32>(1);
            let (answer, answers) = sync_channel(1);
            let read = self.read;
            let helper = std::thread::Builder::new()
                .name("runyard-sweeper-env".into())
                .spawn(move || {
                    for pid in asked {
                        if answer.send(read(pid)).is_err() {
                            return;
                        }
                    }
                });
            if helper.is_err() {
                return Some((self.read)(pid)); // No thread to be had: read here, as before.
            }
            self.helper = Some((ask, answers));
        }
        let (ask, answers) = self.helper.as_ref()?;
        if self.late {
            match answers.try_recv() {
                Ok(_) => self.late = false, // The late answer, of no use now.
                Err(TryRecvError::Empty) => {
                    self.warn_late();
                    return None;
                }
                Err(TryRecvError::Disconnected) => {
                    (self.helper, self.late) = (None, false);
                    return None;
                }
            }
        }
        if ask.send(pid).is_err() {
            self.helper = None;
            return None;
        }
        match answers.recv_timeout(ENV_READ_LIMIT) {
            Ok(env) => Some(env),
            Err(RecvTimeoutError::Timeout) => {
                self.late = true;
                self.warn_late();
                None
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.helper = None;
                None
            }
        }
    }
}

/// The children of `parent` (a single-threaded process: its main thread's), `None` when the
/// kernel does not tell (no `/proc/PID/task/TID/children`). The kernel's list skips a child when
/// one before it is reaped during the read (the spawner reaps its jobs all the time): read twice,
/// and what either read lists (the round after looks again, `run`).
fn children_of(parent: u32) -> Option<Vec<u32>> {
    let path = format!("/proc/{parent}/task/{parent}/children");
    let mut pids: Vec<u32> = Vec::new();
    for _ in 0..2 {
        let list = std::fs::read_to_string(&path).ok()?;
        pids.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    pids.sort_unstable();
    pids.dedup();
    Some(pids)
}

/// Whether `/proc` must be walked for `jobs`: some was forked by this process, or some child of
/// a spawner of theirs, not a job the server knows to run, may be theirs (by its session, its
/// group or its marks).
fn needs_walk(jobs: &[Ended], marks: &mut MarksCache) -> bool {
    let mut reapers = Vec::new();
    for job in jobs {
        match job.reaper {
            None => return true,
            Some(r) if !reapers.contains(&r) => reapers.push(r),
            Some(_) => {}
        }
    }
    for reaper in reapers {
        let Some(children) = children_of(reaper) else {
            return true;
        };
        for child in crate::spawn::not_jobs_of(reaper, &children) {
            let Some(s) = read_stat(child).filter(|s| s.ppid == reaper) else {
                continue;
            };
            let theirs = jobs.iter().filter(|j| j.reaper == Some(reaper)).any(|j| {
                s.session == j.leader
                    || s.pgrp == j.leader
                    || (j.marks.is_some() && marks.of(&s) == j.marks)
            });
            if theirs {
                return true;
            }
        }
    }
    false
}

/// `SIGKILL` to what `jobs` left ([`leftovers`]), found again until none is left alive or
/// `within` has passed. Returns how many processes were signalled.
fn kill_leftovers(jobs: &[Ended], marks: &mut MarksCache, within: Duration) -> usize {
    let until = Instant::now() + within;
    let mut found: Vec<Member> = Vec::new();
    let mut pause = Duration::from_millis(5);
    loop {
        let all = all_processes();
        let left = leftovers(
            &all,
            jobs,
            &found,
            |s| marks.of(s),
            |m| state().live.contains_key(m),
        );
        if left.is_empty() || Instant::now() >= until {
            return found.len();
        }
        signal(&left, libc::SIGKILL);
        for m in left {
            if !found.contains(&m) {
                found.push(m);
            }
        }
        std::thread::sleep(pause.min(until.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(160));
    }
}

/// Of the processes `all`, the live ones that `jobs` (ended) left, as the module says, and the
/// descendants of `also` (found earlier, matched by pid and start time); never this process,
/// init, nor a spawner. `marks_of` reads a process's marks; `live` tells whether an attempt with
/// those marks runs here (its processes are then never taken for an ended job's).
pub(crate) fn leftovers(
    all: &[Stat],
    jobs: &[Ended],
    also: &[Member],
    mut marks_of: impl FnMut(&Stat) -> Option<Marks>,
    live: impl Fn(&Marks) -> bool,
) -> Vec<Member> {
    let taken: HashSet<u32> = all.iter().map(|s| s.pid).collect();
    // The latest start a member of each session (and group) may have; none for a leader whose
    // pid names a process again.
    let mut bound: HashMap<u32, u64> = HashMap::new();
    for j in jobs.iter().filter(|j| !taken.contains(&j.leader)) {
        if let Some(seen) = j.seen {
            let b = bound.entry(j.leader).or_insert(seen);
            *b = (*b).max(seen);
        }
    }
    let reapers: HashSet<u32> = jobs.iter().filter_map(|j| j.reaper).collect();
    let wanted: HashSet<(u32, &Marks)> = jobs
        .iter()
        .filter_map(|j| Some((j.reaper?, j.marks.as_ref()?)))
        .filter(|(_, m)| !live(m))
        .collect();
    let within = |id: u32, s: &Stat| bound.get(&id).is_some_and(|b| s.start <= *b);
    let mut seed = |s: &Stat| {
        within(s.session, s)
            || within(s.pgrp, s)
            || also.iter().any(|m| m.pid == s.pid && m.start == s.start)
            || (reapers.contains(&s.ppid)
                && !wanted.is_empty()
                && marks_of(s).is_some_and(|m| wanted.contains(&(s.ppid, &m))))
    };
    let found = crate::session::with_descendants(all, &mut seed);
    let me = std::process::id();
    all.iter()
        .filter(|s| found.contains(&s.pid) && !s.zombie && s.pid > 1 && s.pid != me)
        .filter(|s| !reapers.contains(&s.pid))
        .map(|s| Member {
            pid: s.pid,
            start: s.start,
            pgrp: s.pgrp,
        })
        .collect()
}

#[cfg(test)]
#[path = "sweep_tests.rs"]
mod tests;
