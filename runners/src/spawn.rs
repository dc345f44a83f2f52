//! Starting local jobs without forking the server.
//!
//! `fork` copies the page tables of the whole process, and a server with a runtime, a SQLite
//! writer and their heaps pays for it on every job (and the kernel's copy-on-write faults after),
//! while `posix_spawn` cannot set `PR_SET_PDEATHSIG` in the child. So the server makes, once and
//! early, before its first thread, a copy of itself that does nothing else: the **spawner**
//! ([`start_early`]). It is small and single-threaded, so its forks are cheap. For each job the
//! server sends it the program, arguments, environment, directory, identity and limits (a stream
//! socket); the spawner forks, applies them exactly as the local runner did (own process group,
//! `PR_SET_PDEATHSIG(SIGKILL)` on the spawner, [`crate::isolation`]) and execs, then sends back
//! the pid, its start time and the read ends of the job's stdout and stderr (`SCM_RIGHTS` on a
//! `SOCK_SEQPACKET` socket; in a burst, a few starts to a message), and later the job's wait
//! status once it has reaped it (with the next starts, or on its own).
//!
//! There are several spawners (`worker.spawners`; by default one per CPU, at most
//! [`MAX_AUTO_SPAWNERS`]): a spawner starts one job at a time and waits in `clone` until that job
//! has called `execve`, so on a busy machine one alone paces every local job. Each job goes to the
//! spawner with the fewest starts under way ([`shared`]).
//!
//! Each spawner has `PR_SET_PDEATHSIG(SIGKILL)` on the server's main thread and leaves when the
//! server closes its socket, so `kill -9` of the server kills the spawners, which kill their
//! jobs: no orphan, as before. The server still signals a job's group itself (cancel, timeout)
//! and still recovers by pid and start time after a restart. Should a spawner die while the
//! server runs, its running jobs fail (their status is unknown; they died with it) and later jobs
//! go to the other spawners; once none is left, they are forked by the server as before.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::oneshot;

use crate::isolation::Isolation;
use crate::spawn_wire::{recv_with_fds, Reply, Request};

static SPAWNERS: OnceLock<Vec<Spawner>> = OnceLock::new();

/// Spawners started when the caller asks for none in particular: one per CPU, at most this many.
/// One spawner starts one job at a time: it waits in `clone` until the job has called `execve`
/// (`CLONE_VFORK`), so on a busy machine a single one paces every local job (with `/bin/true`
/// jobs on two cores it waited on its children half of the time and never on the server).
pub const MAX_AUTO_SPAWNERS: usize = 4;

/// The server's and the spawner's ends of one spawner's two sockets.
struct Ends {
    req_server: UnixStream,
    req_spawner: UnixStream,
    rep_spawner: OwnedFd,
    rep_server: OwnedFd,
}

/// Starts `count` spawner processes (0: one per CPU, at most [`MAX_AUTO_SPAWNERS`]); once, later
/// calls do nothing. Jobs go to the spawner with the fewest starts under way (one held by a slow
/// start, a hung mount, still gets jobs when the others are as busy).
///
/// # Safety
/// Call it while the process has a single thread, from the thread that lives as long as the
/// process (the main thread): each spawner is a `fork` of the caller, and its parent-death signal
/// follows that thread. Call it after secrets were taken out of the environment and the process
/// was made non-dumpable: a spawner keeps the environment and the flags it was forked with.
pub unsafe fn start_early(count: usize) -> io::Result<()> {
    if SPAWNERS.get().is_some() {
        return Ok(());
    }
    let count = match count {
        0 => std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_AUTO_SPAWNERS),
        n => n,
    };
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
                // Dies with the server; the server may already be gone.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0
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
            requests: Mutex::new(e.req_server),
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

/// The spawner to start the next job: of those still there, the one with the fewest starts
/// under way (the next in turn among equals); `None` when none was started or all are gone.
pub(crate) fn shared() -> Option<&'static Spawner> {
    static TURN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let all = SPAWNERS.get()?;
    let loads = all
        .iter()
        .map(|s| s.alive().then(|| lock(&s.shared.pending).len()));
    pick(loads, TURN.fetch_add(1, Ordering::Relaxed)).map(|i| &all[i])
}

/// Of spawners with these starts under way (`None`: gone), the index of the one with the fewest,
/// the first at or after `turn` (modulo their number) among equals.
fn pick(loads: impl ExactSizeIterator<Item = Option<usize>>, turn: usize) -> Option<usize> {
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
pub(crate) struct Spawner {
    pid: u32,
    requests: Mutex<UnixStream>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
}

type StartReply = io::Result<Started>;

#[derive(Default)]
struct Shared {
    /// Requests sent, by id.
    pending: Mutex<HashMap<u64, oneshot::Sender<StartReply>>>,
    /// Running jobs, by pid: where their wait status goes.
    exits: Mutex<HashMap<u32, oneshot::Sender<i32>>>,
    /// The spawner is gone.
    dead: AtomicBool,
}

/// A job the spawner started.
pub(crate) struct Started {
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

    /// Starts a job; returns once it runs (or could not start).
    pub(crate) async fn spawn(&self, mut req: Request) -> io::Result<Started> {
        req.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(req.id, tx);
        if self.shared.dead.load(Ordering::SeqCst) {
            lock(&self.shared.pending).remove(&req.id);
            return Err(gone());
        }
        // A short blocking write: the spawner reads requests as fast as it forks, and the socket
        // buffer holds many.
        let sent = lock(&self.requests).write_all(&req.encode());
        if let Err(e) = sent {
            lock(&self.shared.pending).remove(&req.id);
            return Err(e);
        }
        rx.await.unwrap_or_else(|_| Err(gone()))
    }
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
    shared.dead.store(true, Ordering::SeqCst);
    for (_, tx) in lock(&shared.pending).drain() {
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
        Reply::Failed { id, errno, message } => {
            let e = if errno != 0 {
                io::Error::from_raw_os_error(errno)
            } else {
                io::Error::other(message)
            };
            if let Some(tx) = lock(&shared.pending).remove(&id) {
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
    let tx = lock(&shared.pending).remove(&id);
    let [stdout, stderr] = fds;
    let reply = match (stdout, stderr) {
        (Some(stdout), Some(stderr)) => Ok(Started {
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
    use super::pick;

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
