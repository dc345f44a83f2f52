//! Starting local jobs without forking the server.
//!
//! `fork` copies the page tables of the whole process, and a server with a runtime, a SQLite
//! writer and their heaps pays for it on every job (and the kernel's copy-on-write faults after),
//! while `posix_spawn` cannot set `PR_SET_PDEATHSIG` in the child. So a server that runs local
//! jobs makes, early, before its first thread, copies of itself that do nothing else: the
//! **spawners** ([`start_early`]). Each is small and single-threaded, so its forks are cheap. For each job the
//! server sends it the program, arguments, environment, directory, identity and limits (a stream
//! socket); the spawner forks, applies them exactly as the local runner did (own session and process group,
//! `PR_SET_PDEATHSIG(SIGKILL)` on the spawner, [`crate::isolation`]) and execs, then sends back
//! the pid, its start time and the read ends of the job's stdout and stderr (`SCM_RIGHTS` on a
//! `SOCK_SEQPACKET` socket; in a burst, a few starts to a message), and later the job's wait
//! status once it has reaped it (with the next starts, or on its own).
//!
//! There are several spawners (`worker.spawners`; by default one per CPU, at most
//! [`MAX_AUTO_SPAWNERS`]): a spawner starts one job at a time and waits in `clone` until that job
//! has called `execve`, so on a busy machine one alone paces every local job. Each job goes to the
//! spawner with the fewest starts under way, one stalled in a start last ([`start`]).
//!
//! Each spawner is a child subreaper (`PR_SET_CHILD_SUBREAPER`): what a job leaves once its
//! parent has exited becomes the spawner's child, not init's, where the server's sweeper finds it
//! at the job's end ([`crate::sweep`]). Each has `PR_SET_PDEATHSIG(SIGTERM)` on the server's main
//! thread and leaves when it gets it, the server no longer its parent, or when the server closes
//! its socket, killing the group of every job it still runs first, and the rest of its session
//! and its descendants ([`crate::session`]), and every other child it has, with theirs (found in
//! one walk before any signal, the children read again at every walk: a killed process's
//! children become the spawner's); so
//! `kill -9` of the server kills the spawners, which kill their jobs and what the jobs started
//! or left: no orphan. The server still
//! signals a job's group and session itself (cancel, timeout) and still recovers by pid and start time after
//! a restart. Should a spawner die while the server runs, its running jobs fail (their status
//! is unknown; they died with it) and later jobs go to the other spawners; once none is left,
//! they are forked by the server as before.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::isolation::Isolation;
use crate::spawn_wire::{recv_with_fds, write, Reply, Request};

static SPAWNERS: OnceLock<Vec<Spawner>> = OnceLock::new();

/// Spawners started when the caller asks for none in particular: one per CPU, at most this many.
/// One spawner starts one job at a time: it waits in `clone` until the job has called `execve`
/// (`CLONE_VFORK`), so on a busy machine a single one paces every local job (with `/bin/true`
/// jobs on two cores it waited on its children half of the time and never on the server).
pub const MAX_AUTO_SPAWNERS: usize = 4;

/// The most spawners there can be (more asked for: this many).
pub const MAX_SPAWNERS: usize = 64;

/// How many spawners [`start_early`] starts when asked for `asked` on `cpus` CPUs.
pub fn spawner_count(asked: usize, cpus: usize) -> usize {
    match asked {
        0 => cpus.clamp(1, MAX_AUTO_SPAWNERS),
        n => n.min(MAX_SPAWNERS),
    }
}

/// The server's and the spawner's ends of one spawner's two sockets.
struct Ends {
    req_server: UnixStream,
    req_spawner: UnixStream,
    rep_spawner: OwnedFd,
    rep_server: OwnedFd,
}

/// Starts `count` spawner processes (0: one per CPU, at most [`MAX_AUTO_SPAWNERS`]; never more
/// than [`MAX_SPAWNERS`]); once, later calls do nothing. Jobs go to the spawner with the fewest
/// starts under way; one stalled in a start (a hung mount) gets jobs only when all are.
///
/// # Safety
/// Call it while the process has a single thread, from the thread that lives as long as the
/// process (the main thread): each spawner is a `fork` of the caller, and its parent-death signal
/// follows that thread. Call it after secrets were taken out of the environment and the process
/// was made non-dumpable: a spawner keeps the environment and the flags it was forked with.
/// Nothing else in the process may reap children it did not start (`waitpid(-1)`, `SIGCHLD`
/// ignored): each spawner is reaped, and signalled, by its own reader thread.
pub unsafe fn start_early(count: usize) -> io::Result<()> {
    if SPAWNERS.get().is_some() {
        return Ok(());
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let count = spawner_count(count, cpus);
    let mut ends = Vec::with_capacity(count);
    for _ in 0..count {
        let (req_server, req_spawner) = UnixStream::pair()?;
        let (rep_spawner, rep_server) = seqpacket_pair()?;
        ends.push(Ends {
            req_server,
            req_spawner,
            rep_spawner,
            rep_server,
        });
    }
    let server = libc::getpid();
    let mut started = Vec::with_capacity(count);
    for i in 0..count {
        match libc::fork() {
            -1 if started.is_empty() => return Err(io::Error::last_os_error()),
            // Fewer spawners than asked: the ones started serve.
            -1 => break,
            0 => {
                // Its own spawner-side ends only: every other descriptor of the pairs is closed.
                let mine = ends.swap_remove(i);
                drop(ends);
                drop(mine.req_server);
                drop(mine.rep_server);
                // Told when the server dies (`SIGTERM`, taken from its signalfd: it kills its
                // jobs' groups and leaves; the default action until then); the server may
                // already be gone.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0
                    || libc::getppid() != server
                {
                    libc::_exit(0);
                }
                crate::spawn_process::serve(mine.req_spawner.into(), mine.rep_spawner)
            }
            pid => started.push(pid),
        }
    }
    let mut spawners = Vec::with_capacity(started.len());
    for (pid, e) in started.into_iter().zip(ends) {
        drop(e.req_spawner);
        drop(e.rep_spawner);
        let shared = Arc::new(Shared::default());
        let reader = shared.clone();
        let rep_server = e.rep_server;
        let read = std::thread::Builder::new()
            .name("runyard-spawner".into())
            .spawn(move || read_replies(rep_server, &reader, pid));
        if let Err(err) = read {
            // No reader, no spawner: stopped and reaped here, never left a zombie.
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
            tracing::warn!(error = %err, "cannot start a spawner's reader thread");
            continue;
        }
        spawners.push(Spawner {
            pid: pid as u32,
            requests: Arc::new(tokio::sync::Mutex::new(e.req_server)),
            shared,
            next_id: AtomicU64::new(1),
        });
    }
    if spawners.is_empty() {
        return Err(io::Error::other("no spawner's reader thread could start"));
    }
    if spawners.len() < count {
        tracing::warn!(
            started = spawners.len(),
            asked = count,
            "fewer spawner processes than asked for"
        );
    }
    let _ = SPAWNERS.set(spawners);
    Ok(())
}

/// How long a start may stay unanswered before its spawner counts as stalled (held in a step
/// before `exec`: a hung mount, a slow identity lookup): a stalled spawner gets a job only when
/// every other one is stalled too. A start takes about a millisecond, a heavy one under load a
/// few hundred.
pub const STALLED_AFTER: Duration = Duration::from_secs(2);

/// Starts a job on a spawner: the one [`choose`] picks; if the request cannot reach it (it is
/// gone, its socket broken), the next, each at most once. `None` when no spawner is left to take
/// it: the caller forks. A request that reached a spawner is never sent again, even if that
/// spawner died before it answered (the job may have begun).
pub(crate) async fn start(mut req: Request) -> Option<io::Result<Started>> {
    start_on(SPAWNERS.get()?, &mut req).await
}

async fn start_on(all: &[Spawner], req: &mut Request) -> Option<io::Result<Started>> {
    static TURN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut tried = 0u64;
    loop {
        let i = choose(all, tried, TURN.fetch_add(1, Ordering::Relaxed))?;
        tried |= 1 << i;
        match all[i].spawn(req).await {
            Ok(started) => {
                return Some(Ok(Started {
                    spawner: all[i].pid,
                    ..started
                }))
            }
            Err(Start::Failed(e)) => return Some(Err(e)),
            Err(Start::NotSent(e)) => tracing::warn!(
                spawner = all[i].pid,
                error = %e,
                "a spawner could not take a job; another one is asked"
            ),
        }
    }
}

/// Of `pids`, children of the spawner `spawner`, those the server does not know as its running
/// jobs (a job just started whose start is not read yet is one of them).
pub(crate) fn not_jobs_of(spawner: u32, pids: &[u32]) -> Vec<u32> {
    let Some(s) = SPAWNERS
        .get()
        .and_then(|a| a.iter().find(|s| s.pid == spawner))
    else {
        return pids.to_vec();
    };
    let exits = lock(&s.shared.exits);
    pids.iter()
        .copied()
        .filter(|p| !exits.contains_key(p))
        .collect()
}

/// Some spawner is still there to start jobs.
pub(crate) fn available() -> bool {
    SPAWNERS
        .get()
        .is_some_and(|all| all.iter().any(Spawner::alive))
}

/// Of the spawners still there and not in `tried` (a bit each), the one to start the next job:
/// one not stalled before one that is ([`STALLED_AFTER`]), then the one with the fewest starts
/// under way, then the next in turn among equals.
fn choose(all: &[Spawner], tried: u64, turn: usize) -> Option<usize> {
    let now = Instant::now();
    let loads = all.iter().enumerate().map(|(i, s)| {
        if tried & (1 << i) != 0 || !s.alive() {
            return None;
        }
        let pending = lock(&s.shared.pending);
        // Ids only grow: the first is the oldest.
        let stalled = pending
            .first_key_value()
            .is_some_and(|(_, (sent, _))| now.saturating_duration_since(*sent) > STALLED_AFTER);
        Some((stalled, pending.len()))
    });
    pick(loads, turn)
}

/// Of spawners with these loads (`None`: not to be asked), the index of the one with the least,
/// the first at or after `turn` (modulo their number) among equals.
fn pick<L: Ord>(loads: impl ExactSizeIterator<Item = Option<L>>, turn: usize) -> Option<usize> {
    let n = loads.len();
    loads
        .enumerate()
        .filter_map(|(i, load)| Some((load?, (i + n - turn % n.max(1)) % n.max(1), i)))
        .min()
        .map(|(_, _, i)| i)
}

/// The pids of the spawner processes still there (for tests and diagnostics).
pub fn spawner_pids() -> Vec<u32> {
    SPAWNERS.get().map_or_else(Vec::new, |all| {
        all.iter().filter(|s| s.alive()).map(|s| s.pid).collect()
    })
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // Safety: plain syscall into a local array; the descriptors are owned from here.
    unsafe {
        if libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// The server's side of the spawner.
struct Spawner {
    pid: u32,
    /// Requests go one at a time ([`Spawner::send`]).
    requests: Arc<tokio::sync::Mutex<UnixStream>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
}

type StartReply = io::Result<Started>;

#[derive(Default)]
struct Shared {
    /// Requests sent, by id, with when they were.
    pending: Mutex<BTreeMap<u64, (Instant, oneshot::Sender<StartReply>)>>,
    /// Running jobs, by pid: where their wait status goes.
    exits: Mutex<HashMap<u32, oneshot::Sender<i32>>>,
    /// The spawner is gone.
    dead: AtomicBool,
}

/// A job the spawner started.
pub(crate) struct Started {
    /// The spawner that started it (the pid of the job's parent).
    pub spawner: u32,
    pub pid: u32,
    pub start_time: Option<u64>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub child: SpawnedChild,
}

/// Waits for a job the spawner started.
pub(crate) struct SpawnedChild {
    exit: oneshot::Receiver<i32>,
    done: Option<Result<i32, ()>>,
}

impl SpawnedChild {
    /// How the job ended. Cancel-safe, and may be called again.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        if self.done.is_none() {
            self.done = Some((&mut self.exit).await.map_err(|_| ()));
        }
        match self.done {
            Some(Ok(s)) => Ok(ExitStatus::from_raw(s)),
            _ => Err(io::Error::other(
                "the spawner process ended, and the job with it",
            )),
        }
    }
}

fn gone() -> io::Error {
    io::Error::other("the spawner process is gone")
}

impl Spawner {
    /// Its reader has not seen it end.
    fn alive(&self) -> bool {
        !self.shared.dead.load(Ordering::SeqCst)
    }

    /// Starts a job; returns once it runs (or could not start). Cancel-safe: given up before
    /// its request went out, the start is not left counted as under way; given up once part of
    /// it went out, the request is still written whole ([`Spawner::send`]) and the job, started
    /// for nobody, is killed when its start is told ([`started`]).
    async fn spawn(&self, req: &mut Request) -> Result<Started, Start> {
        req.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(req.id, (Instant::now(), tx));
        let unsent = Unsent(&self.shared, req.id);
        if !self.alive() {
            return Err(Start::NotSent(gone()));
        }
        if let Err(e) = self.send(req, unsent).await {
            return Err(Start::NotSent(e));
        }
        match rx.await {
            Ok(reply) => reply.map_err(Start::Failed),
            Err(_) => Err(Start::Failed(gone())),
        }
    }

    /// Writes a request (`MSG_NOSIGNAL`: a spawner gone is `EPIPE`, never `SIGPIPE`), one at a
    /// time and whole, without holding the thread: when the socket's buffer is full (a spawner
    /// stalled before `exec`, a hung mount, with requests queued behind it) the caller waits for
    /// room as for any other I/O, and the thread's other tasks run meanwhile; [`choose`] passes
    /// a stalled spawner over while another answers. Once part of the request is out, the rest
    /// is written by a task of its own, which finishes even if the caller gives up: the spawner
    /// never sees a request cut short but by an error, which retires it (the rest of its stream
    /// would make no sense). `unsent` is forgotten once a byte is out. Needs a Tokio runtime
    /// with I/O (the worker's).
    async fn send(&self, req: &Request, unsent: Unsent<'_>) -> io::Result<()> {
        let frame = req.encode();
        let requests = self.requests.clone().lock_owned().await;
        let mut sent = 0;
        let first = write(&requests, &frame, &mut sent, true).await;
        if sent > 0 {
            std::mem::forget(unsent);
        }
        if let Err(e) = first {
            if sent > 0 || matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)) {
                // Gone, or its stream cut. Otherwise, with nothing written, it stays in service.
                retire(&self.shared, &requests);
            }
            return Err(e);
        }
        if sent == frame.len() {
            return Ok(());
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            // Ended before the request is whole (an error, or the task dropped with its
            // runtime): the spawner is retired.
            let cut = Cut(&shared, &requests);
            let rest = write(&requests, &frame, &mut sent, false).await;
            if rest.is_ok() {
                std::mem::forget(cut);
            }
            rest
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// Retires a spawner: no request goes to it any more, and closing our end of its requests makes
/// it leave; its reader then fails what it had under way.
fn retire(shared: &Shared, requests: &UnixStream) {
    shared.dead.store(true, Ordering::SeqCst);
    let _ = requests.shutdown(std::net::Shutdown::Write);
}

/// A request partly written: dropped, its spawner is retired ([`retire`]).
struct Cut<'a>(&'a Shared, &'a UnixStream);

impl Drop for Cut<'_> {
    fn drop(&mut self) {
        retire(self.0, self.1);
    }
}

/// A start counted as under way ([`Shared::pending`]) whose request has not gone out: dropped,
/// it is counted no more.
struct Unsent<'a>(&'a Shared, u64);

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        lock(&self.0.pending).remove(&self.1);
    }
}

/// Why a spawner did not start a job.
enum Start {
    /// The request never reached it: another spawner (or a fork) may take the job.
    NotSent(io::Error),
    /// It was sent, and the start failed (or the spawner ended before it answered).
    Failed(io::Error),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The request for a job: `cmd`'s program, arguments and environment (the environment is
/// cleared first, as `LocalRunner` does), where it starts, its umask and its isolation.
pub(crate) fn request(
    cmd: &std::process::Command,
    cwd: Option<&std::path::Path>,
    workdir: Option<(&std::ffi::CStr, bool)>,
    umask: Option<u32>,
    isolation: &Isolation,
) -> Request {
    let bytes = |s: &std::ffi::OsStr| s.as_bytes().to_vec();
    Request {
        id: 0,
        program: bytes(cmd.get_program()),
        args: cmd.get_args().map(bytes).collect(),
        env: cmd
            .get_envs()
            .filter_map(|(k, v)| Some((bytes(k), bytes(v?))))
            .collect(),
        cwd: cwd.map(|c| bytes(c.as_os_str())),
        workdir: workdir.map(|(w, create)| (w.to_bytes().to_vec(), create)),
        umask,
        limits: isolation.limit_pairs(),
        identity: isolation
            .identity
            .as_ref()
            .map(|i| (i.uid, i.gid, i.groups.clone())),
    }
}

/// Hands each reply to whoever waits for it, until the spawner goes away.
fn read_replies(sock: OwnedFd, shared: &Shared, spawner: libc::pid_t) {
    let mut buf = vec![0u8; 4096];
    while let Ok((n, fds)) = recv_with_fds(sock.as_raw_fd(), &mut buf) {
        if n == 0 {
            break;
        }
        let Some(replies) = Reply::decode_all(&buf[..n]) else {
            break;
        };
        // Each start takes the next two descriptors (its pipes), in order.
        let mut fds = fds.into_iter();
        for reply in replies {
            deliver(shared, reply, &mut fds);
        }
    }
    // It ended, or sent what makes no sense: stopped first (its answers can no longer be trusted,
    // and its jobs go with it), before its starts and jobs are failed here and may be retried.
    // Safety: signals our own child, which nothing but this thread reaps.
    unsafe { libc::kill(spawner, libc::SIGKILL) };
    shared.dead.store(true, Ordering::SeqCst);
    for (_, (_, tx)) in std::mem::take(&mut *lock(&shared.pending)) {
        let _ = tx.send(Err(gone()));
    }
    lock(&shared.exits).clear();
    if spawner_pids().is_empty() {
        tracing::error!(
            spawner = spawner,
            "the last spawner process ended: local jobs are now started by forking the server"
        );
    } else {
        tracing::error!(
            spawner = spawner,
            "a spawner process ended: its running jobs failed, the other spawners start the next"
        );
    }
    // Safety: reaps our own child.
    unsafe { libc::waitpid(spawner, std::ptr::null_mut(), 0) };
}

/// Hands one reply to whoever waits for it (`fds`: the descriptors of the message not yet taken;
/// a start takes two).
fn deliver(shared: &Shared, reply: Reply, fds: &mut std::vec::IntoIter<OwnedFd>) {
    match reply {
        Reply::Started {
            id,
            pid,
            start_time,
        } => started(shared, id, pid, start_time, [fds.next(), fds.next()]),
        Reply::Failed {
            id,
            errno,
            at_exec,
            message,
        } => {
            let e = if errno != 0 && at_exec {
                crate::exec_error::exec_failed(errno)
            } else if errno != 0 {
                io::Error::from_raw_os_error(errno)
            } else {
                io::Error::other(message)
            };
            if let Some((_, tx)) = lock(&shared.pending).remove(&id) {
                let _ = tx.send(Err(e));
            }
        }
        Reply::Exited { pid, status } => {
            if let Some(tx) = lock(&shared.exits).remove(&pid) {
                let _ = tx.send(status);
            }
        }
    }
}

/// A job started: its exit goes to a new waiter, and the rest to the launch waiting for it (or,
/// when nobody waits any more, the job is killed).
fn started(shared: &Shared, id: u64, pid: u32, start_time: Option<u64>, fds: [Option<OwnedFd>; 2]) {
    let (etx, erx) = oneshot::channel();
    lock(&shared.exits).insert(pid, etx);
    let tx = lock(&shared.pending).remove(&id).map(|(_, tx)| tx);
    let [stdout, stderr] = fds;
    let reply = match (stdout, stderr) {
        (Some(stdout), Some(stderr)) => Ok(Started {
            // Filled in by `start_on`, which knows the spawner.
            spawner: 0,
            pid,
            start_time,
            stdout,
            stderr,
            child: SpawnedChild {
                exit: erx,
                done: None,
            },
        }),
        // The spawner always sends both pipes; the kernel drops descriptors it cannot install in
        // this process (MSG_CTRUNC) when the server is out of them. That is the host's
        // exhaustion, not the job's failure: EMFILE, so the attempt is given back and retried
        // (`RunnerError::from_launch_io`), as the fork path does when `pipe` fails.
        _ => Err(io::Error::from_raw_os_error(libc::EMFILE)),
    };
    let delivered = match (tx, reply) {
        (Some(tx), Ok(r)) => tx.send(Ok(r)).is_ok(),
        (Some(tx), Err(e)) => {
            let _ = tx.send(Err(e));
            false
        }
        (None, _) => false,
    };
    if !delivered {
        lock(&shared.exits).remove(&pid);
        // Safety: plain syscall on the job's own group.
        unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn_wire::send_with_fds;
    use std::io::Read;

    /// A pid no process has (above `pid_max`): what a fake spawner reports, and is killed at
    /// the end (harmlessly).
    const NO_PID: u32 = libc::pid_t::MAX as u32;

    /// The server's side of a spawner played by the test.
    fn fake(pid: u32, requests: UnixStream, shared: Arc<Shared>) -> Spawner {
        Spawner {
            pid,
            requests: Arc::new(tokio::sync::Mutex::new(requests)),
            shared,
            next_id: AtomicU64::new(1),
        }
    }

    /// Reads one request off a spawner's socket (blocking).
    fn read_one(theirs: &mut UnixStream) -> Request {
        let mut len = [0u8; 4];
        theirs.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
        theirs.read_exact(&mut body).unwrap();
        Request::decode(&body).unwrap()
    }

    /// A spawner whose request socket's other end is closed, as when it died an instant ago
    /// and its reader has not noticed yet.
    fn just_died() -> Spawner {
        let (requests, _peer) = UnixStream::pair().unwrap();
        fake(NO_PID, requests, Arc::default())
    }

    /// A spawner played by a thread: it answers the first request with a start of `pid`.
    fn answering(pid: u32) -> Spawner {
        let (requests, mut theirs) = UnixStream::pair().unwrap();
        let (replies, ours) = seqpacket_pair().unwrap();
        let shared = Arc::new(Shared::default());
        let reader = shared.clone();
        std::thread::spawn(move || read_replies(ours, &reader, NO_PID as libc::pid_t));
        std::thread::spawn(move || {
            let id = read_one(&mut theirs).id;
            let (out, err) = (seqpacket_pair().unwrap(), seqpacket_pair().unwrap());
            let reply = Reply::Started {
                id,
                pid,
                start_time: None,
            };
            let fds = [out.0.as_raw_fd(), err.0.as_raw_fd()];
            send_with_fds(replies.as_raw_fd(), &reply.encode(), &fds).unwrap();
            // Stays until the test is over.
            std::thread::sleep(Duration::from_secs(30));
        });
        fake(pid, requests, shared)
    }

    fn true_request() -> Request {
        let cmd = std::process::Command::new("/bin/true");
        request(&cmd, None, None, None, &Isolation::default())
    }

    #[tokio::test]
    async fn a_request_that_cannot_reach_a_spawner_goes_to_the_next() {
        // The one that just died is chosen first (the other has a start under way), and the
        // job ends up started by the one that answers, wherever it stands.
        let busy = || {
            let s = answering(NO_PID);
            let (tx, _) = oneshot::channel();
            lock(&s.shared.pending).insert(0, (Instant::now(), tx));
            s
        };
        for order in 0..2 {
            let all = if order == 0 {
                [just_died(), busy()]
            } else {
                [busy(), just_died()]
            };
            let started = start_on(&all, &mut true_request()).await;
            assert_eq!(started.map(|s| s.unwrap().pid), Some(NO_PID));
            // It was asked first, and retired.
            assert_eq!(all.iter().filter(|s| !s.alive()).count(), 1);
        }
        // None left to take it: the caller forks; those that could not take it are retired, and
        // no longer chosen.
        let all = [just_died(), just_died()];
        assert!(start_on(&all, &mut true_request()).await.is_none());
        assert!(all.iter().all(|s| !s.alive()));
        assert_eq!(choose(&all, 0, 0), None);
    }

    /// A spawner that never reads its requests (stalled before `exec`, a hung mount), and the
    /// other end of its request socket.
    fn not_reading() -> (Spawner, UnixStream) {
        let (requests, theirs) = UnixStream::pair().unwrap();
        (fake(NO_PID, requests, Arc::default()), theirs)
    }

    /// A request far larger than the socket's buffer, as a full buffer of requests queued
    /// behind a stalled start would be.
    fn big_request() -> Request {
        let mut cmd = std::process::Command::new("/bin/true");
        cmd.arg("x".repeat(4 << 20));
        request(&cmd, None, None, None, &Isolation::default())
    }

    // One thread, as the worker's: a blocking write would hold every other task on it.
    #[tokio::test]
    async fn a_spawner_that_does_not_read_holds_up_its_request_not_the_thread() {
        let (s, mut theirs) = not_reading();
        let reading = Arc::new(AtomicBool::new(false));
        let r = reading.clone();
        let spawner = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(600));
            r.store(true, Ordering::SeqCst);
            read_one(&mut theirs)
        });
        let req = big_request();
        let both = async {
            tokio::join!(
                async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    !reading.load(Ordering::SeqCst)
                },
                s.send(&req, Unsent(&s.shared, 0))
            )
        };
        let (ran_meanwhile, sent) = tokio::time::timeout(Duration::from_secs(20), both)
            .await
            .expect("the request never went out");
        sent.unwrap();
        assert!(ran_meanwhile, "the thread was held until the spawner read");
        // Once read, the request arrives whole.
        assert_eq!(spawner.join().unwrap(), req);
        assert!(s.alive());
    }

    #[tokio::test]
    async fn a_request_given_up_part_way_is_still_written_whole() {
        let (s, mut theirs) = not_reading();
        let mut req = big_request();
        let given_up = tokio::time::timeout(Duration::from_millis(100), s.spawn(&mut req)).await;
        assert!(
            given_up.is_err(),
            "a 4 MiB request fitted the socket's buffer"
        );
        // The spawner stays, its stream intact: the rest follows as it reads, and the start,
        // made for nobody, stays counted until its answer (which kills the job).
        assert!(s.alive());
        assert_eq!(lock(&s.shared.pending).len(), 1);
        let got = tokio::task::spawn_blocking(move || read_one(&mut theirs));
        let got = tokio::time::timeout(Duration::from_secs(20), got)
            .await
            .expect("the rest of the request never came")
            .unwrap();
        assert_eq!(got, req);
        assert!(s.alive());
    }

    #[tokio::test]
    async fn a_spawner_gone_while_a_request_waits_for_room_is_retired() {
        let (s, theirs) = not_reading();
        let req = big_request();
        let gone = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(theirs);
        };
        let (sent, ()) = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(s.send(&req, Unsent(&s.shared, 0)), gone)
        })
        .await
        .expect("the wait for room did not end with the spawner");
        assert!(sent.is_err());
        assert!(!s.alive());
        assert_eq!(choose(std::slice::from_ref(&s), 0, 0), None);
    }

    #[tokio::test]
    async fn a_start_given_up_before_its_request_went_out_is_not_counted_as_under_way() {
        let (s, _theirs) = not_reading();
        // Another request is being written.
        let other = s.requests.lock().await;
        let mut req = true_request();
        let given_up = tokio::time::timeout(Duration::from_millis(50), s.spawn(&mut req)).await;
        assert!(given_up.is_err());
        drop(other);
        assert!(lock(&s.shared.pending).is_empty());
        assert!(s.alive());
        assert_eq!(choose(std::slice::from_ref(&s), 0, 0), Some(0));
    }

    #[test]
    fn one_spawner_per_cpu_unless_asked_never_more_than_the_bounds() {
        assert_eq!(spawner_count(0, 1), 1);
        assert_eq!(spawner_count(0, 2), 2);
        assert_eq!(spawner_count(0, 96), MAX_AUTO_SPAWNERS);
        assert_eq!(spawner_count(3, 1), 3);
        assert_eq!(spawner_count(1, 8), 1);
        assert_eq!(spawner_count(1000, 2), MAX_SPAWNERS);
    }

    #[test]
    fn a_spawner_stalled_in_a_start_gets_a_job_only_when_all_are() {
        let stalled = |n: usize| (true, n);
        let fine = |n: usize| (false, n);
        let pick = |loads: &[Option<(bool, usize)>], turn| pick(loads.iter().copied(), turn);
        assert_eq!(pick(&[Some(stalled(1)), Some(fine(5))], 0), Some(1));
        assert_eq!(pick(&[Some(fine(5)), Some(stalled(0))], 1), Some(0));
        assert_eq!(pick(&[Some(stalled(3)), Some(stalled(1))], 0), Some(1));
        assert_eq!(pick(&[Some(stalled(1)), None], 1), Some(0));
    }

    #[test]
    fn a_job_goes_to_the_least_busy_spawner_still_there_in_turn_among_equals() {
        let pick = |loads: &[Option<usize>], turn| pick(loads.iter().copied(), turn);
        // In turn when all are equal.
        assert_eq!(pick(&[Some(0), Some(0)], 0), Some(0));
        assert_eq!(pick(&[Some(0), Some(0)], 1), Some(1));
        assert_eq!(pick(&[Some(0), Some(0), Some(0)], 5), Some(2));
        // The one with fewer starts under way, whoever's turn it is.
        assert_eq!(pick(&[Some(3), Some(1)], 0), Some(1));
        assert_eq!(pick(&[Some(0), Some(2)], 1), Some(0));
        // Never one that is gone; none when all are.
        assert_eq!(pick(&[None, Some(9)], 0), Some(1));
        assert_eq!(pick(&[Some(0), None], 1), Some(0));
        assert_eq!(pick(&[None, None], 0), None);
        assert_eq!(pick(&[], 3), None);
    }
}
