//! How the spawner process (see [`crate::spawn_process`]) starts a job: `clone(CLONE_VM |
//! CLONE_VFORK)` on a stack of its own, as `posix_spawn` does, instead of `fork`.
//!
//! `fork` copies the spawner's page tables for every job, then both sides take copy-on-write
//! faults and `execve` tears the copy down again: in a profile of 1,000 `/bin/true` jobs that was
//! about a quarter of the spawner's and its children's CPU. With `CLONE_VM` the child borrows the
//! spawner's memory until it calls `execve` (the spawner waits meanwhile: `CLONE_VFORK`), so
//! nothing is copied. The price is the rule of `vfork`: the child allocates nothing and makes only
//! async-signal-safe calls. Everything it needs (C strings, pointer arrays, pipes) is made before
//! the clone; its one result, an errno (and whether `execve` itself failed, see
//! [`crate::exec_error`]), goes back through the shared memory.
//!
//! The child does what `std::process::Command` did with the settings the spawner used: an empty
//! signal mask and `SIGPIPE` back to its default, stdin from `/dev/null`, stdout and stderr to
//! the pipes, the directory, a session (and process group) of its own, then the isolation, umask and
//! parent-death signal (in that order) and `execvp` with the job's environment (so the program is
//! looked up in the job's own `PATH`, and a script without `#!` runs through `/bin/sh`).

use std::ffi::{c_char, c_int, c_void, CString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::isolation::Isolation;

extern "C" {
    /// The C library's environment (what `execvp` reads `PATH` from and passes on).
    static mut environ: *const *const c_char;
}

/// Usable size of the child's stack (it runs a few system calls and `execvp`, which keeps the
/// candidate path on the stack).
const STACK: usize = 256 << 10;

/// The stack the child runs on, mapped once with a guard page at its low end (the spawner waits
/// while the child runs, so one stack serves every job).
pub(crate) struct ChildStack {
    base: *mut c_void,
    len: usize,
}

impl ChildStack {
    pub(crate) fn new() -> io::Result<Self> {
        // Safety: plain syscalls; the mapping is owned by the returned value.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE).max(4096) as usize;
            let len = STACK + page;
            let base = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            if libc::mprotect(base, page, libc::PROT_NONE) != 0 {
                let e = io::Error::last_os_error();
                libc::munmap(base, len);
                return Err(e);
            }
            Ok(Self { base, len })
        }
    }

    /// The top of the stack (it grows down), 16-byte aligned.
    fn top(&self) -> *mut c_void {
        ((self.base as usize + self.len) & !15) as *mut c_void
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // Safety: the mapping made in `new`, no longer used.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// One job, ready to start.
pub(crate) struct Job<'a> {
    /// The program (looked up in the job's `PATH` when it has no `/`).
    pub program: CString,
    /// All arguments, the program's name first.
    pub argv: Vec<CString>,
    /// `NAME=value` strings: the whole environment of the job.
    pub envp: Vec<CString>,
    /// Entered before the identity changes.
    pub cwd: Option<CString>,
    /// Entered (made first when flagged) after the identity changes.
    pub workdir: Option<(CString, bool)>,
    pub umask: Option<u32>,
    pub isolation: &'a Isolation,
    /// `/dev/null`, for stdin.
    pub stdin: RawFd,
    /// The spawner's pid: the job leaves at once when its parent is already another process.
    pub spawner: libc::pid_t,
}

/// What the child reads (all made before the clone) and its one result.
struct ChildArgs<'a> {
    job: &'a Job<'a>,
    argv: *const *const c_char,
    envp: *const *const c_char,
    stdout: RawFd,
    stderr: RawFd,
    /// The errno of the step that failed; 0 when `execve` succeeded.
    errno: AtomicI32,
    /// The step that failed was `execve` itself (the program), not one before it.
    at_exec: AtomicBool,
}

/// A job that runs: its pid, its start time when the clock alone tells it (see [`start_tick`]),
/// and the read ends of its stdout and stderr.
pub(crate) type Spawned = (u32, Option<u64>, [OwnedFd; 2]);

/// Starts `job`. Returns once the job has called `execve` (or failed before it: then its error,
/// the child already reaped).
pub(crate) fn start(job: &Job, stack: &mut ChildStack) -> io::Result<Spawned> {
    let ptrs = |v: &[CString]| -> Vec<*const c_char> {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let (argv, envp) = (ptrs(&job.argv), ptrs(&job.envp));
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let args = ChildArgs {
        job,
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        stdout: raw(&out_w),
        stderr: raw(&err_w),
        errno: AtomicI32::new(0),
        at_exec: AtomicBool::new(false),
    };
    // Safety: the child runs on its own stack and only reads `args` (and what it points to, all
    // alive until this call returns) and stores its errno; this process is single-threaded and
    // waits until the child has exec'd or exited (CLONE_VFORK). The child replaces `environ`
    // (shared memory) right before `execvp`; it is put back here.
    let (pid, clone_err, before, after) = unsafe {
        let saved = environ;
        let before = boot_ns();
        let pid = libc::clone(
            child,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&args as *const ChildArgs).cast_mut().cast(),
        );
        let e = io::Error::last_os_error();
        let after = boot_ns();
        environ = saved;
        (pid, e, before, after)
    };
    drop((out_w, err_w));
    if pid < 0 {
        return Err(clone_err);
    }
    match args.errno.load(Ordering::SeqCst) {
        0 => Ok((pid as u32, start_tick(before, after), [out_r, err_r])),
        e => {
            // Safety: reaps our own child, which has exited already.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            if args.at_exec.load(Ordering::SeqCst) {
                Err(crate::exec_error::exec_failed(e))
            } else {
                Err(io::Error::from_raw_os_error(e))
            }
        }
    }
}

/// `CLOCK_BOOTTIME` in nanoseconds (`None` if it cannot be read).
fn boot_ns() -> Option<u64> {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Safety: writes into a local (the vDSO answers without a system call).
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t) } != 0 {
        return None;
    }
    Some(u64::try_from(t.tv_sec).ok()? * 1_000_000_000 + u64::try_from(t.tv_nsec).ok()?)
}

/// The job's start time as `/proc/PID/stat` gives it (field 22: clock ticks since boot), from
/// the boot clock read right before and right after the clone, without opening `/proc`.
///
/// The kernel stamps a new task in `clone` with the same boot clock (`start_boottime`) and
/// reports it as `ns / (1e9 / USER_HZ)`; so when the two reads fall in the same tick, the job's
/// tick is that one. Otherwise (a tick boundary passed during the clone, a few jobs in a hundred)
/// `None`: the caller reads `/proc` as before. Reading `/proc/PID/stat` for every job was 40% of
/// the spawner's own CPU with `/bin/true` jobs.
pub(crate) fn start_tick(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    static NS_PER_TICK: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let per = (*NS_PER_TICK.get_or_init(|| {
        // Safety: plain libc call.
        let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
        // The kernel divides like this only when the tick divides a second exactly.
        (hz > 0 && 1_000_000_000 % hz == 0).then(|| 1_000_000_000 / hz)
    }))?;
    let (b, a) = (before? / per, after? / per);
    (b == a).then_some(b)
}

/// The boot clock in ticks, as `/proc/PID/stat` counts start times (`None`: see [`start_tick`]).
pub(crate) fn now_tick() -> Option<u64> {
    let now = boot_ns();
    start_tick(now, now)
}

fn raw(fd: &OwnedFd) -> RawFd {
    std::os::fd::AsRawFd::as_raw_fd(fd)
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // Safety: plain syscall into a local array; the descriptors are owned from here.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// The child: runs on the spawner's memory until `execvp` replaces it.
extern "C" fn child(arg: *mut c_void) -> c_int {
    // Safety: `arg` is the `ChildArgs` of `start`, alive while the parent waits.
    let a = unsafe { &*(arg as *const ChildArgs) };
    // Safety: this is the freshly cloned child (see `run`).
    let e = unsafe { run(a) };
    a.errno
        .store(if e == 0 { libc::EINVAL } else { e }, Ordering::SeqCst);
    // Safety: leaving without running anything of the parent's (no atexit handlers, no flush).
    unsafe { libc::_exit(127) }
}

/// Makes `fd` the descriptor `to` (without close-on-exec).
///
/// # Safety
/// Only in the child.
unsafe fn install(fd: RawFd, to: RawFd) -> bool {
    if fd == to {
        libc::fcntl(fd, libc::F_SETFD, 0) == 0
    } else {
        libc::dup2(fd, to) == to
    }
}

/// Everything between clone and exec; returns the errno of what failed (`execvp` returns only
/// on failure). Allocates nothing; only async-signal-safe calls (and `execvp`, which glibc's
/// `posix_spawnp` also runs in such a child).
///
/// # Safety
/// Only in the child of `start`.
unsafe fn run(a: &ChildArgs) -> c_int {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL)
    };
    let job = a.job;
    // The job starts with no signal blocked (the spawner blocks SIGCHLD and SIGTERM) and with SIGPIPE at its
    // default (Rust ignores it); the handler table is the child's own (no CLONE_SIGHAND).
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    // The spawner keeps 0, 1 and 2 open, so the pipes and /dev/null are above them.
    if !install(job.stdin, 0) || !install(a.stdout, 1) || !install(a.stderr, 2) {
        return errno();
    }
    // Nothing else reaches the job: not the pipes' other ends, not what the server inherited.
    crate::isolation::cloexec_inherited();
    if let Some(c) = &job.cwd {
        if libc::chdir(c.as_ptr()) != 0 {
            return errno();
        }
    }
    // A session of its own, and so a process group whose id is its pid: no controlling terminal
    // (the server's, when it runs in one, is out of reach: `/dev/tty` fails with ENXIO, so a job
    // can neither write escapes to it nor be stopped reading it), and what leaves the group stays
    // in the session, where a stop finds it (`crate::session`).
    if libc::setsid() < 0 {
        return errno();
    }
    // Limits, the pipes' owner, groups, user (in that order), then the private working
    // directory. glibc's setuid
    // and setgid make a plain system call here only because the spawner is single-threaded: in a
    // threaded process they would signal every thread (setxid) and change the parent's identity
    // too, since this child runs in its memory. Never call `start` from the server.
    if let Err(e) = job
        .isolation
        .apply(job.workdir.as_ref().map(|(w, c)| (w.as_c_str(), *c)))
    {
        return e.raw_os_error().unwrap_or(libc::EINVAL);
    }
    if let Some(m) = job.umask {
        libc::umask(m as libc::mode_t);
    }
    // After setuid, which clears the parent-death signal.
    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
        return errno();
    }
    // The spawner may have died before prctl took effect.
    if libc::getppid() != job.spawner {
        libc::_exit(137);
    }
    environ = a.envp;
    libc::execvp(job.program.as_ptr(), a.argv);
    let e = errno();
    a.at_exec.store(true, Ordering::SeqCst);
    e
}

#[cfg(test)]
mod tests {
    use super::start_tick;

    #[test]
    fn the_start_tick_is_known_only_when_the_clone_stayed_within_one_tick() {
        // SAFETY: plain libc call.
        let per = 1_000_000_000 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let t = 1_234 * per;
        assert_eq!(start_tick(Some(t), Some(t + per - 1)), Some(1_234));
        assert_eq!(start_tick(Some(t - 1), Some(t)), None);
        assert_eq!(start_tick(None, Some(t)), None);
        assert_eq!(start_tick(Some(t), None), None);
    }
}
