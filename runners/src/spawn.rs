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
//! The spawner has `PR_SET_PDEATHSIG(SIGKILL)` on the server's main thread and leaves when the
//! server closes its socket, so `kill -9` of the server kills the spawner, which kills its jobs:
//! no orphan, as before. The server still signals a job's group itself (cancel, timeout) and
//! still recovers by pid and start time after a restart. Should the spawner die while the server
//! runs, running jobs fail (their status is unknown; they died with it) and later jobs are
//! forked by the server as before.

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

static SPAWNER: OnceLock<Spawner> = OnceLock::new();

/// Starts the spawner process (once; later calls do nothing).
///
/// # Safety
/// Call it while the process has a single thread, from the thread that lives as long as the
/// process (the main thread): the spawner is a `fork` of the caller, and its parent-death signal
/// follows that thread. Call it after secrets were taken out of the environment and the process
/// was made non-dumpable: the spawner keeps the environment and the flags it was forked with.
pub unsafe fn start_early() -> io::Result<()> {
    if SPAWNER.get().is_some() {
        return Ok(());
    }
    let (req_server, req_spawner) = UnixStream::pair()?;
    let (rep_spawner, rep_server) = seqpacket_pair()?;
    let server = libc::getpid();
    match libc::fork() {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(req_server);
            drop(rep_server);
            // Dies with the server; the server may already be gone.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0
                || libc::getppid() != server
            {
                libc::_exit(0);
            }
            crate::spawn_process::serve(req_spawner.into(), rep_spawner)
        }
        pid => {
            drop(req_spawner);
            drop(rep_spawner);
            let shared = Arc::new(Shared::default());
            let reader = shared.clone();
            std::thread::Builder::new()
                .name("runyard-spawner".into())
                .spawn(move || read_replies(rep_server, &reader, pid))?;
            let _ = SPAWNER.set(Spawner {
                pid: pid as u32,
                requests: Mutex::new(req_server),
                shared,
                next_id: AtomicU64::new(1),
            });
            Ok(())
        }
    }
}

/// The spawner, when one was started and is still there.
pub(crate) fn shared() -> Option<&'static Spawner> {
    SPAWNER
        .get()
        .filter(|s| !s.shared.dead.load(Ordering::SeqCst))
}

/// The pid of the spawner process, when one runs (for tests and diagnostics).
pub fn spawner_pid() -> Option<u32> {
    shared().map(|s| s.pid)
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
    tracing::error!("the spawner process ended: local jobs are now started by forking the server");
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
