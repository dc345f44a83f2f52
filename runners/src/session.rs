//! What a stop reaches beyond a local job's process group.
//!
//! Each local job leads a session of its own (`setsid` between fork and exec: no controlling
//! terminal, and a process group whose id is the job's pid). A stop (cancel, timeout, the
//! worker's shutdown, a recovery after a restart, a spawner leaving with the server) kills that
//! group, and also the job's other processes, found in `/proc` while the job's first process
//! still runs:
//!
//! - every process of the job's session: a process may leave the job's group with `setpgid` (GNU
//!   `timeout` does, and shells' job control) but stays in the session unless it calls `setsid`,
//!   even once its parent has died;
//! - every descendant, by parent pid, of the job's first process or of one of those, wherever its
//!   group or session (a child that called `setsid` while its parent still runs).
//!
//! Each is signalled through a pidfd opened and then checked to be the process found (pid and
//! start time), so a pid reused meanwhile is never signalled.
//!
//! Not followed by the stop: a process that left the session (`setsid`) and whose parent had
//! already exited at the stop (a daemon's double fork), nor one that another such process
//! starts. A job that ends by itself (and a stopped one, after the stop) is handed to the
//! sweeper ([`crate::sweep`]), which kills, without making the job's end wait, the rest of its
//! session and their descendants, and, for a job a spawner started, what left the session with
//! the job's `JOB_ID` and `JOB_ATTEMPT` once its parent had exited (a double fork included): the
//! walk is paid only when a spawner has a child that is not a running job's first process (or
//! for a job the server forked itself), once per round for every job that ended meanwhile.

use std::collections::{HashMap, HashSet};
use std::ffi::c_int;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// One process found: its pid, start time (field 22 of `/proc/PID/stat`) and process group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    pub pid: u32,
    pub start: u64,
    pub pgrp: u32,
}

/// What the walk reads of `/proc/PID/stat`.
pub(crate) struct Stat {
    pub pid: u32,
    pub ppid: u32,
    pub pgrp: u32,
    pub session: u32,
    pub start: u64,
    pub zombie: bool,
    /// In uninterruptible sleep (`D`), not a kernel thread (which has no memory map to wait
    /// for): reading its environment may block for good.
    pub disk_wait: bool,
}

/// `PF_KTHREAD` of the flags in `/proc/PID/stat`: a kernel thread.
const PF_KTHREAD: u64 = 0x0020_0000;

/// `/proc/PID/stat`, parsed; `None` when the process is gone or the line makes no sense.
pub(crate) fn read_stat(pid: u32) -> Option<Stat> {
    let line = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let after = std::str::from_utf8(&line[line.iter().rposition(|&b| b == b')')? + 1..]).ok()?;
    // Fields after the command: state is field 3, start time field 22.
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some(Stat {
        pid,
        zombie: matches!(*f.first()?, "Z" | "X"),
        disk_wait: *f.first()? == "D" && num(6)? & PF_KTHREAD == 0,
        ppid: u32::try_from(num(1)?).ok()?,
        pgrp: u32::try_from(num(2)?).ok()?,
        session: u32::try_from(num(3)?).ok()?,
        start: num(19)?,
    })
}

/// Whether `pid` is the live process that started at `start` (ticks since boot): not gone, not
/// another process under a reused pid, not a zombie (one whose parent, a hung worker say, does
/// not reap it is as dead as it gets).
pub(crate) fn lives(pid: u32, start: Option<u64>) -> bool {
    read_stat(pid).is_some_and(|s| !s.zombie && start.is_none_or(|t| s.start == t))
}

/// Whether `/proc` numbers processes as this process's pid namespace does (`/proc/self` names
/// this process's pid), checked once. When it does not (a server in a pid namespace of its own
/// with the host's `/proc` mounted, `unshare -p -f` without `--mount-proc`), a pid read there
/// names another process than `pidfd_open` and `kill` reach: the walks of this module and of the
/// sweeper are off (only a job's group is killed, by its leader's pid), with one WARN.
pub(crate) fn proc_is_ours() -> bool {
    static OURS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OURS.get_or_init(|| {
        let named = std::fs::read_link("/proc/self").ok();
        let ours = named
            .as_ref()
            .and_then(|p| p.to_str()?.parse::<u32>().ok())
            .is_some_and(|p| p == std::process::id());
        if !ours {
            tracing::warn!(
                proc_self = ?named,
                pid = std::process::id(),
                "/proc is not this process's pid namespace's: what a local job leaves outside its \
                 process group is neither stopped nor swept (mount a /proc of the namespace)"
            );
        }
        ours
    })
}

/// Every process in `/proc`; none when `/proc` is another pid namespace's ([`proc_is_ours`]).
pub(crate) fn all_processes() -> Vec<Stat> {
    if !proc_is_ours() {
        return Vec::new();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// The live processes of the jobs led by `leaders` (pid, and start time when known), the leaders
/// included while they are the processes they were: their groups, their sessions, the
/// descendants of those and of `also` (processes found earlier, checked by start time too),
/// never this process nor init. Zombies are left out (they are only waiting to be reaped).
pub(crate) fn members(leaders: &[(u32, Option<u64>)], also: &[Member]) -> Vec<Member> {
    members_under(leaders, also, None)
}

/// [`members`], and every child of `reaper` with its descendants: a spawner (a child subreaper)
/// whose every child is a job or what jobs left (see `crate::spawn_process`), read again at each
/// walk, so a process whose parent was killed meanwhile (reparented to the spawner) is found.
fn members_under(
    leaders: &[(u32, Option<u64>)],
    also: &[Member],
    reaper: Option<u32>,
) -> Vec<Member> {
    let all = all_processes();
    // A leader whose pid now names another process (same pid, another start time) was reused:
    // a group or session of that id is no longer the job's (Linux keeps a pid from reuse while
    // a group or session still bears it, so with the leader gone they are the job's).
    let reused =
        |p: u32, t: Option<u64>| t.is_some_and(|t| all.iter().any(|s| s.pid == p && s.start != t));
    let ids: HashSet<u32> = leaders
        .iter()
        .filter(|(p, t)| !reused(*p, *t))
        .map(|(p, _)| *p)
        .collect();
    let seed = |s: &Stat| {
        ids.contains(&s.pgrp)
            || ids.contains(&s.session)
            || leaders
                .iter()
                .any(|(p, st)| *p == s.pid && st.is_none_or(|t| t == s.start))
            || also.iter().any(|m| m.pid == s.pid && m.start == s.start)
            || reaper.is_some_and(|r| s.ppid == r)
    };
    let found = with_descendants(&all, seed);
    let me = std::process::id();
    all.iter()
        .filter(|s| found.contains(&s.pid) && !s.zombie && s.pid > 1 && s.pid != me)
        .map(|s| Member {
            pid: s.pid,
            start: s.start,
            pgrp: s.pgrp,
        })
        .collect()
}

/// The pids of the processes of `all` that `seed` picks, and of every descendant of theirs by
/// parent pid.
pub(crate) fn with_descendants(all: &[Stat], mut seed: impl FnMut(&Stat) -> bool) -> HashSet<u32> {
    let mut found: HashSet<u32> = all.iter().filter(|s| seed(s)).map(|s| s.pid).collect();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for s in all {
        children.entry(s.ppid).or_default().push(s.pid);
    }
    let mut todo: Vec<u32> = found.iter().copied().collect();
    while let Some(p) = todo.pop() {
        for c in children.get(&p).into_iter().flatten() {
            if found.insert(*c) {
                todo.push(*c);
            }
        }
    }
    found
}

/// Sends `sig` to each of `members` that is still the process found.
pub(crate) fn signal(members: &[Member], sig: c_int) {
    for m in members {
        signal_one(*m, sig);
    }
}

fn signal_one(m: Member, sig: c_int) {
    let Ok(pid) = c_int::try_from(m.pid) else {
        return;
    };
    let same = || read_stat(m.pid).is_some_and(|s| s.start == m.start);
    // Safety: plain syscall; the descriptor is owned from here.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        // A kernel before 5.3 (ENOSYS), or a seccomp profile that refuses pidfd_open (EPERM,
        // older container runtimes): checked, then signalled by pid (a narrow window for a
        // reuse). ESRCH: the process is gone.
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH) && same() {
            // Safety: plain syscall.
            unsafe { libc::kill(pid, sig) };
        }
        return;
    }
    // Safety: a descriptor just opened, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as c_int) };
    // The pidfd holds on to the process it was opened for: if that is the one found, the signal
    // goes to it and to nothing else.
    if same() {
        // Safety: plain syscall on a valid pidfd, no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

/// `SIGKILL` to the processes of the jobs led by `leaders` and to `also` (see [`members`]),
/// found again until none is left alive: one forked meanwhile by one not yet killed is caught by
/// the next walk. Bounded by `within` (a process stuck in the kernel does not die at once). Blocks:
/// not on a runtime thread. True when none is left alive.
pub(crate) fn kill_all(leaders: &[(u32, Option<u64>)], also: &[Member], within: Duration) -> bool {
    kill_all_under(leaders, also, None, within)
}

/// [`kill_all`], and every child of `reaper` with its descendants, the children read again at
/// each walk (see [`members_under`]): what a spawner leaving with the server kills.
///
/// No signal before the first walk: `also` is found with its descendants, then all are killed
/// together (a process killed first would have its children reparented, to init or to a
/// subreaper, out of reach of a walk by parent pid).
pub(crate) fn kill_all_under(
    leaders: &[(u32, Option<u64>)],
    also: &[Member],
    reaper: Option<u32>,
    within: Duration,
) -> bool {
    let until = Instant::now() + within;
    // Each walk reads all of `/proc`: the pause between walks doubles (5 ms to 160 ms), so a
    // process that does not die at once (in the kernel, or not ours to kill) costs a few walks.
    let mut pause = Duration::from_millis(5);
    loop {
        let left = members_under(leaders, also, reaper);
        if left.is_empty() || Instant::now() >= until {
            return left.is_empty();
        }
        signal(&left, libc::SIGKILL);
        std::thread::sleep(pause.min(until.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(160));
    }
}

/// Sends `signal` to the process group `pgid` (a job's own group: its pid).
pub(crate) fn kill_group(pgid: i32, signal: c_int) {
    if pgid > 1 {
        // Safety: plain syscall; ESRCH (no such group) is expected and ignored.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::{CommandExt, ExitStatusExt};

    #[test]
    fn the_walk_finds_what_left_the_group_and_never_this_process() {
        // A shell whose child leaves the group (`setpgid` through Python or a subshell's job
        // control would do; `setsid` leaves the session too, and is found by its parent).
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("setsid sleep 30 & echo $! ; wait")
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut out)
            .unwrap();
        let escaped: u32 = out.trim().parse().unwrap();
        let leader = child.id();
        let found = members(&[(leader, None)], &[]);
        let pids: Vec<u32> = found.iter().map(|m| m.pid).collect();
        assert!(pids.contains(&leader), "{pids:?}");
        assert!(pids.contains(&escaped), "{pids:?}");
        assert!(!pids.contains(&std::process::id()), "{pids:?}");
        kill_all(&[(leader, None)], &found, Duration::from_secs(5));
        let _ = child.wait();
        let gone = |p: u32| read_stat(p).is_none_or(|s| s.zombie);
        let until = Instant::now() + Duration::from_secs(5);
        while !gone(escaped) {
            assert!(Instant::now() < until, "{escaped} still alive");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_leader_whose_pid_was_reused_brings_in_neither_its_group_nor_its_session() {
        // A group leader with a child in its group: named with another start time (its pid
        // reused since the job's leader had it), neither is a member.
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("sleep 30 & wait")
            .process_group(0)
            .spawn()
            .unwrap();
        let leader = child.id();
        let start = read_stat(leader).unwrap().start;
        let until = Instant::now() + Duration::from_secs(5);
        while members(&[(leader, Some(start))], &[]).len() < 2 {
            assert!(Instant::now() < until, "the shell's child did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(members(&[(leader, Some(start + 1))], &[]), vec![]);
        kill_all(&[(leader, Some(start))], &[], Duration::from_secs(5));
        let _ = child.wait();
        assert_eq!(members(&[(leader, None)], &[]), vec![]);
    }

    #[test]
    fn a_process_found_is_not_signalled_once_it_is_another() {
        // The start time no longer matches: nothing is sent (the process would die of it).
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = read_stat(pid).unwrap().start;
        signal(
            &[Member {
                pid,
                start: start + 1,
                pgrp: 0,
            }],
            libc::SIGKILL,
        );
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            child.try_wait().unwrap().is_none(),
            "a reused pid was signalled"
        );
        signal(
            &[Member {
                pid,
                start,
                pgrp: 0,
            }],
            libc::SIGKILL,
        );
        assert!(child.wait().unwrap().signal() == Some(libc::SIGKILL));
    }
}
