//! The spawner process itself (see [`crate::spawn`]): a copy of the server made before it had
//! a second thread, so small and single-threaded. It starts the jobs the server asks for, hands
//! their output pipes back and reports how each one ended.

use std::ffi::CString;
use std::io::{self, BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::isolation::{Identity, Isolation};
use crate::spawn_vfork::{ChildStack, Job};
use crate::spawn_wire::{send_with_fds, Reply, Request, STARTS_PER_MESSAGE};

/// Largest request accepted (the job's arguments and environment): far above what the server
/// accepts for a job.
const MAX_REQUEST: usize = 256 << 20;

/// Runs the spawner until the server goes away; never returns.
pub(crate) fn serve(requests: OwnedFd, replies: OwnedFd) -> ! {
    // A group of its own: a terminal's ^C reaches the server, which decides what its jobs get.
    // A child subreaper: what a job leaves once its parent has exited becomes this process's
    // child, not init's, where the server's sweeper finds it when the job has ended
    // (`crate::sweep`) and where `Live::leave` kills it; this process reaps it when it dies.
    // Safety: plain syscalls on this process.
    let (me, server) = unsafe {
        libc::setpgid(0, 0);
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        (libc::getpid(), libc::getppid())
    };
    let (Ok(signals), Ok(null), Ok(mut stack)) = (child_signals(), dev_null(), ChildStack::new())
    else {
        // Safety: leaving at once, nothing to clean up.
        unsafe { libc::_exit(1) }
    };
    // The jobs started and not yet reaped: their groups are killed when the spawner leaves.
    let mut live = Live::default();
    let mut spawn = |req: &Request| start(req, me, null.as_raw_fd(), &mut stack);
    // Buffered: one `read` takes every request the server has queued (a burst of jobs arrives
    // together), and they are all served before the next `poll`.
    let mut requests = BufReader::with_capacity(64 << 10, std::fs::File::from(requests));
    let out = replies.as_raw_fd();
    loop {
        let mut fds = [
            libc::pollfd {
                fd: requests.get_ref().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: signals.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // Safety: two valid pollfd entries.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue; // EINTR
        }
        if fds[1].revents != 0 {
            let got = drain(signals.as_raw_fd());
            reap(out, Vec::new(), Vec::new(), &mut live);
            if got.server_gone(server) {
                live.leave();
            }
        }
        if fds[0].revents != 0 {
            // The starts of a burst go a few to a message, with the exits reaped meanwhile: one
            // `sendmsg` here, one `recvmsg` and wake-up in the server for several jobs.
            let (mut msg, mut pipes, mut starts) = (Vec::new(), Vec::new(), 0);
            // The jobs that ended meanwhile are told with the starts held (a quick job's exit
            // waits for no queue of starts; the worker may then record its start and finish in
            // one write), after them: a job that has already ended is told of after its start.
            let flush = |msg: &mut Vec<u8>, pipes: &mut Vec<OwnedFd>, live: &mut Live| {
                let got = drain(signals.as_raw_fd());
                if got.any {
                    reap(out, std::mem::take(msg), std::mem::take(pipes), live);
                } else {
                    send(out, msg, pipes, live);
                    msg.clear();
                    pipes.clear();
                }
                if got.server_gone(server) {
                    live.leave();
                }
            };
            loop {
                // The server closed its end (it is exiting) or sent garbage: leave, and the jobs
                // with it.
                let Some(req) = read_request(&mut requests) else {
                    live.leave()
                };
                // Steps before `exec` that touch the file system (a directory to enter or make,
                // another identity) may take long (a slow or hung mount): the starts held go
                // first, so running jobs are never held behind them.
                if starts > 0 && may_stall(&req) {
                    flush(&mut msg, &mut pipes, &mut live);
                    starts = 0;
                }
                let clone_began = Instant::now();
                let started = live.start(server, || spawn(&req));
                answer(&req, started, &mut msg, &mut pipes);
                starts += 1;
                let last = requests.buffer().is_empty();
                if last
                    || starts == STARTS_PER_MESSAGE
                    || clone_began.elapsed() > SLOW_START
                    || msg.len() > MESSAGE_BYTES
                {
                    flush(&mut msg, &mut pipes, &mut live);
                    starts = 0;
                }
                if last {
                    break;
                }
            }
        }
    }
}

/// A start that took longer than this (clone to `exec`) is sent at once with those held: the
/// machine is slow, and holding starts would only delay them.
const SLOW_START: Duration = Duration::from_millis(1);

/// A message is sent once it holds this many bytes (a failed start's reply carries its error
/// text), well within the server's 4 KiB buffer with the exits that follow it.
const MESSAGE_BYTES: usize = 1024;

/// Whether a request's steps before `exec` touch the file system beyond finding the program.
fn may_stall(req: &Request) -> bool {
    req.cwd.is_some() || req.workdir.is_some() || req.identity.is_some()
}

/// Adds how a request went to the next message (`msg`, with the job's pipes in `pipes`).
fn answer(
    req: &Request,
    started: io::Result<(u32, Option<u64>, [OwnedFd; 2])>,
    msg: &mut Vec<u8>,
    pipes: &mut Vec<OwnedFd>,
) {
    let reply = match started {
        Ok((pid, start_time, fds)) => {
            pipes.extend(fds);
            Reply::Started {
                id: req.id,
                pid,
                start_time,
            }
        }
        Err(e) => Reply::Failed {
            id: req.id,
            errno: crate::exec_error::errno_of(&e),
            at_exec: crate::exec_error::exec_errno(&e).is_some(),
            message: e.to_string().chars().take(200).collect(),
        },
    };
    msg.extend_from_slice(&reply.encode());
}

/// Sends one message with its pipes (leaves when the server is gone).
fn send(out: RawFd, msg: &[u8], pipes: &[OwnedFd], live: &Live) {
    let raw: Vec<RawFd> = pipes.iter().map(AsRawFd::as_raw_fd).collect();
    if send_with_fds(out, msg, &raw).is_err() {
        live.leave()
    }
}

/// Sets the signal this process gets when the server dies.
fn set_parent_death(sig: libc::c_int) {
    // Safety: plain syscall on this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) };
}

/// The jobs this spawner started and has not reaped, by pid (each leads its own group).
#[derive(Default)]
struct Live(std::collections::HashSet<u32>);

impl Live {
    /// Starts a job with `spawn`, and counts it. While it starts one this process waits in
    /// `clone` until the child has called `execve`, which only a fatal signal breaks (a hung
    /// mount can hold it for ever): meanwhile the server's death kills it outright, as it kills
    /// a job's first process (the rest of their groups then waits for the recovery after a
    /// restart). A server gone before the death signal was `SIGTERM` again sends none: seen here.
    fn start(
        &mut self,
        server: libc::pid_t,
        spawn: impl FnOnce() -> io::Result<(u32, Option<u64>, [OwnedFd; 2])>,
    ) -> io::Result<(u32, Option<u64>, [OwnedFd; 2])> {
        set_parent_death(libc::SIGKILL);
        let started = spawn();
        set_parent_death(libc::SIGTERM);
        if let Ok((pid, ..)) = &started {
            self.0.insert(*pid);
        }
        // Safety: plain syscall.
        if unsafe { libc::getppid() } != server {
            self.leave();
        }
        started
    }

    /// Leaves, killing the group of every job still running, and the rest of its session and
    /// its descendants ([`crate::session`]): what a job started (a shell's background command, a
    /// Python `Popen`, GNU `timeout` in a group of its own) dies with the server too, not only
    /// the job's first process (whose parent-death signal is this process's end). And every other
    /// child of this process, with its descendants: what jobs left once their parent had exited
    /// (this process is their subreaper), ended jobs' not yet swept (`crate::sweep`) included.
    fn leave(&self) -> ! {
        // Every job's group stopped at once, before the walk of `/proc` (milliseconds on a busy
        // host): a job must not go on working, and end, after its server's death (the kill of
        // the groups was immediate before the walk existed, and a crash test caught a job that
        // finished during it). Stopped, its processes keep their parent links for the walk.
        for pid in &self.0 {
            // Safety: plain syscall on the group of a child not yet reaped (see below).
            unsafe { libc::kill(-(*pid as libc::pid_t), libc::SIGSTOP) };
        }
        let leaders: Vec<(u32, Option<u64>)> = self.0.iter().map(|p| (*p, None)).collect();
        // Every child of this process is a job or what jobs left (a subreaper), with its
        // descendants: found in one walk before any signal, and read again at every walk (what
        // a process killed meanwhile had forked becomes this process's child). Children not
        // reaped: their pids cannot be another process's; the walk is bounded.
        let me = Some(std::process::id());
        crate::session::kill_all_under(&leaders, &[], me, std::time::Duration::from_millis(500));
        for pid in &self.0 {
            // Safety: plain syscall on the group of a child not yet reaped (its pid, and so
            // its group's id, cannot have been reused).
            unsafe { libc::kill(-(*pid as libc::pid_t), libc::SIGKILL) };
        }
        // Safety: leaving.
        unsafe { libc::_exit(0) }
    }
}

/// The signals this spawner takes from its signalfd: `SIGCHLD`, and `SIGTERM`, its
/// parent-death signal (`spawn::start_early`; `SIGKILL` while it starts a job): the server is
/// gone.
const SIGNALS: [libc::c_int; 2] = [libc::SIGCHLD, libc::SIGTERM];

/// A signalfd for [`SIGNALS`] (blocked, so they are only ever read from there; the jobs start
/// with an empty mask, `spawn_vfork`).
fn child_signals() -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // Safety: plain syscalls on a local signal set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// What [`drain`] read.
struct Drained {
    /// Some signal was pending.
    any: bool,
    /// `SIGTERM`: the server is gone, if it is no longer the parent.
    term: bool,
}

impl Drained {
    /// The server is gone: a `SIGTERM` (the parent-death signal) and the server no longer the
    /// parent. A `SIGTERM` while it still is (systemd's stop sends one to every process of the
    /// unit) is not the server's end: the server stops its jobs as it decides.
    fn server_gone(&self, server: libc::pid_t) -> bool {
        // Safety: plain syscall.
        self.term && unsafe { libc::getppid() } != server
    }
}

/// Reads what the signalfd holds: one read, since a standard signal is pending at most once (a
/// second read only ever said `EAGAIN`); `reap` collects every ended job anyway.
fn drain(fd: RawFd) -> Drained {
    const INFO: usize = std::mem::size_of::<libc::signalfd_siginfo>();
    let mut buf = [0u8; INFO * 8];
    // Safety: reads into a local buffer of the given size.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(n).unwrap_or(0);
    let term = buf[..n].chunks_exact(INFO).any(|info| {
        // `ssi_signo` is the record's first field, a u32 in native order.
        u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) == libc::SIGTERM as u32
    });
    Drained { any: n > 0, term }
}

/// Exits sent in one message at most (9 bytes each, after at most [`MESSAGE_BYTES`] of starts
/// and one more start: within [`MESSAGE_LIMIT`]).
const EXITS_PER_MESSAGE: usize = 256;

/// A message never grows past this many bytes, well within the server's 4 KiB buffer (a message
/// cut short there would be read as a broken spawner).
const MESSAGE_LIMIT: usize = 3072;

/// Reaps every ended job and tells the server how each ended, after what `msg` already holds
/// (starts, with their `pipes`): the exits reaped together go in one message.
fn reap(out: RawFd, mut msg: Vec<u8>, mut pipes: Vec<OwnedFd>, live: &mut Live) {
    let mut n = 0;
    loop {
        let mut status = 0;
        // Safety: plain syscall into a local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        // A job's exit is told; a process it left behind (this is its subreaper) is only reaped.
        if pid > 0 && live.0.remove(&(pid as u32)) {
            let exit = Reply::Exited {
                pid: pid as u32,
                status,
            };
            msg.extend_from_slice(&exit.encode());
            n += 1;
        }
        if (pid <= 0 || n == EXITS_PER_MESSAGE || msg.len() + 9 > MESSAGE_LIMIT) && !msg.is_empty()
        {
            send(out, &msg, &pipes, live);
            msg.clear();
            pipes.clear();
            n = 0;
        }
        if pid <= 0 {
            return;
        }
    }
}

/// One request frame, or `None` at the end of the stream (or on a frame that makes no sense).
fn read_request(r: &mut impl Read) -> Option<Request> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).ok()?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_REQUEST {
        return None;
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Request::decode(&body)
}

/// `/dev/null` for the jobs' stdin; first, descriptors 0, 1 and 2 are made to exist (on
/// `/dev/null` when the server started without them), so no pipe of a job ever lands on them.
fn dev_null() -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // Safety: plain syscalls; a descriptor opened onto 0..=2 stays open for good, the last one is
    // owned by the returned value.
    unsafe {
        for fd in 0..3 {
            if libc::fcntl(fd, libc::F_GETFD) == -1
                && libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) == -1
            {
                return Err(io::Error::last_os_error());
            }
        }
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Starts one job: its pid, start time and the read ends of its stdout and stderr.
fn start(
    req: &Request,
    me: libc::pid_t,
    stdin: RawFd,
    stack: &mut ChildStack,
) -> io::Result<(u32, Option<u64>, [OwnedFd; 2])> {
    let c = |b: &[u8], what: &str| {
        CString::new(b).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} holds a NUL byte"),
            )
        })
    };
    let program = c(&req.program, "the program")?;
    let mut argv = vec![program.clone()];
    for a in &req.args {
        argv.push(c(a, "an argument")?);
    }
    let mut envp = Vec::with_capacity(req.env.len());
    for (k, v) in &req.env {
        envp.push(c(
            &[k.as_slice(), b"=", v.as_slice()].concat(),
            "the environment",
        )?);
    }
    let isolation = Isolation::from_parts(
        req.identity.as_ref().map(|(uid, gid, groups)| Identity {
            uid: *uid,
            gid: *gid,
            groups: groups.clone(),
            account: None,
        }),
        &req.limits,
    );
    let job = Job {
        program,
        argv,
        envp,
        cwd: req.cwd.as_deref().map(|d| c(d, "`cwd`")).transpose()?,
        workdir: match &req.workdir {
            Some((w, create)) => Some((c(w, "`cwd`")?, *create)),
            None => None,
        },
        umask: req.umask,
        isolation: &isolation,
        stdin,
        spawner: me,
    };
    let (pid, start_time, fds) = crate::spawn_vfork::start(&job, stack)?;
    let start_time = start_time.or_else(|| crate::local::process_start_time(pid));
    // The child is not waited for here: `reap` collects it.
    Ok((pid, start_time, fds))
}
