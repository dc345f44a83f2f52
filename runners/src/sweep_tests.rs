use super::*;

/// A spawner's pid in these made-up process tables.
const SPAWNER: u32 = 500;

fn stat(pid: u32, ppid: u32, pgrp: u32, session: u32, start: u64) -> Stat {
    Stat {
        pid,
        ppid,
        pgrp,
        session,
        start,
        zombie: false,
        disk_wait: false,
    }
}

fn marks(job: &str, attempt: u64) -> Marks {
    Marks {
        job: job.into(),
        attempt,
    }
}

fn ended(leader: u32, seen: u64, reaper: Option<u32>, m: Option<Marks>) -> Ended {
    Ended {
        leader,
        seen: Some(seen),
        reaper,
        marks: m,
    }
}

fn pids(found: &[Member]) -> Vec<u32> {
    let mut p: Vec<u32> = found.iter().map(|m| m.pid).collect();
    p.sort_unstable();
    p
}

/// `leftovers` with the marks of a table (`(pid, marks)`) and no attempt running.
fn left(all: &[Stat], jobs: &[Ended], env: &[(u32, Marks)]) -> Vec<u32> {
    let marks_of = |s: &Stat| env.iter().find(|(p, _)| *p == s.pid).map(|e| e.1.clone());
    pids(&leftovers(all, jobs, &[], marks_of, |_| false))
}

#[test]
fn a_session_member_counts_only_if_it_started_by_the_end_seen() {
    // Job 100 ended at tick 1000: 101 (`timeout`, its own group) started before, 102 (its
    // command) too; 103 bears session 100 but started after the end was seen: a new session of a
    // reused pid (its leader gone since), not the job's.
    let all = [
        stat(101, SPAWNER, 101, 100, 990),
        stat(102, 101, 101, 100, 995),
        stat(103, 1, 103, 100, 1001),
        stat(104, 1, 104, 104, 500),
    ];
    let jobs = [ended(100, 1000, Some(SPAWNER), None)];
    assert_eq!(left(&all, &jobs, &[]), [101, 102]);
    // Started in the very tick the end was seen: the job's.
    let all = [stat(101, SPAWNER, 101, 100, 1000)];
    assert_eq!(left(&all, &jobs, &[]), [101]);
    // The group too, under the same guard.
    let all = [stat(105, 1, 100, 105, 999), stat(106, 1, 100, 106, 1002)];
    assert_eq!(left(&all, &jobs, &[]), [105]);
}

#[test]
fn a_leaders_pid_held_again_brings_in_neither_its_session_nor_its_group() {
    // Pid 100 is a live process again: the job's session had emptied before it could be
    // reused, so whatever bears id 100 is the new process's, whatever its start.
    let all = [
        stat(100, 1, 100, 100, 1500),
        stat(101, 100, 100, 100, 900),
        stat(102, 1, 102, 100, 900),
    ];
    let jobs = [ended(100, 1000, Some(SPAWNER), None)];
    assert_eq!(left(&all, &jobs, &[]), Vec::<u32>::new());
}

#[test]
fn descendants_of_what_is_found_count_whatever_their_start_or_session() {
    // 101 is the job's (session 100); 102, a child that called `setsid` while 101 ran, and 103,
    // its child started after the end, are found by their parent links; 104 is nobody's.
    let all = [
        stat(101, SPAWNER, 100, 100, 900),
        stat(102, 101, 102, 102, 1200),
        stat(103, 102, 102, 102, 1300),
        stat(104, 1, 104, 104, 950),
    ];
    let jobs = [ended(100, 1000, Some(SPAWNER), None)];
    assert_eq!(left(&all, &jobs, &[]), [101, 102, 103]);
    // A zombie is not signalled (it only waits to be reaped).
    let mut zombie = stat(101, SPAWNER, 100, 100, 900);
    zombie.zombie = true;
    assert_eq!(left(&[zombie], &jobs, &[]), Vec::<u32>::new());
}

#[test]
fn a_spawners_child_that_left_the_session_is_the_job_its_marks_name() {
    let m = marks("0190-a", 1);
    // 201 (`setsid sleep`, its parent the job's shell, since exited: now the spawner's child)
    // and its child 202; 203 carries another attempt's marks, 204 none, 205 the job's marks but
    // under another parent (not a child of the job's spawner).
    let all = [
        stat(201, SPAWNER, 201, 201, 1500),
        stat(202, 201, 201, 201, 1600),
        stat(203, SPAWNER, 203, 203, 900),
        stat(204, SPAWNER, 204, 204, 900),
        stat(205, 1, 205, 205, 900),
    ];
    let env = [
        (201, m.clone()),
        (202, m.clone()),
        (203, marks("0190-a", 2)),
        (205, m.clone()),
    ];
    let jobs = [ended(100, 1000, Some(SPAWNER), Some(m.clone()))];
    assert_eq!(left(&all, &jobs, &env), [201, 202]);
    // A job forked by this process (no spawner): its marks are not looked for.
    let jobs = [ended(100, 1000, None, Some(m.clone()))];
    assert_eq!(left(&all, &jobs, &env), Vec::<u32>::new());
    // An attempt with those marks runs here (relaunched): its processes are never the ended
    // job's.
    let jobs = [ended(100, 1000, Some(SPAWNER), Some(m.clone()))];
    let marks_of = |s: &Stat| env.iter().find(|(p, _)| *p == s.pid).map(|e| e.1.clone());
    let running = |x: &Marks| *x == m;
    assert!(leftovers(&all, &jobs, &[], marks_of, running).is_empty());
}

#[test]
fn what_was_found_before_brings_in_its_descendants_by_pid_and_start() {
    let all = [stat(301, 1, 301, 301, 700), stat(302, 301, 301, 301, 2000)];
    let jobs = [ended(100, 1000, Some(SPAWNER), None)];
    let before = |start| Member {
        pid: 301,
        start,
        pgrp: 301,
    };
    let found = leftovers(&all, &jobs, &[before(700)], |_| None, |_| false);
    assert_eq!(pids(&found), [301, 302]);
    // Another process under that pid since: not it.
    let found = leftovers(&all, &jobs, &[before(699)], |_| None, |_| false);
    assert!(found.is_empty());
}

#[test]
fn marks_are_read_from_an_environment_block() {
    let env = b"PATH=/bin\0JOB_ID=0190-x\0JOB_ATTEMPT=3\0JOB_SECRET_KEY=k\0";
    assert_eq!(Marks::of_environ(env), Some(marks("0190-x", 3)));
    assert_eq!(Marks::of_environ(b"JOB_ID=0190-x\0"), None);
    assert_eq!(Marks::of_environ(b"JOB_ID=a\0JOB_ATTEMPT=x\0"), None);
    assert_eq!(Marks::of_environ(b""), None);
}

#[test]
fn an_attempt_is_running_from_its_registration_to_its_end_or_drop() {
    let m = marks("0190-sweep-registry", 7);
    let running = || state().live.contains_key(&m);
    let a = Attempt::register("0190-sweep-registry", 7);
    let b = Attempt::register("0190-sweep-registry", 7);
    assert!(running());
    drop(a);
    assert!(running(), "one of the two still runs");
    // Its end hands it to the sweeper (a leader pid no process has: nothing to find).
    super::ended(libc::pid_t::MAX as u32, b);
    assert!(!running());
}

/// Released by the test: the made-up read of process 1's environment blocks until then.
static RELEASED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A made-up `/proc/PID/environ` read: pid 1's blocks until [`RELEASED`] (30 s at most).
fn slow_read(pid: u32) -> Option<Vec<u8>> {
    let until = Instant::now() + Duration::from_secs(30);
    while pid == 1 && !RELEASED.load(std::sync::atomic::Ordering::Acquire) && Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(format!("JOB_ID=j\0JOB_ATTEMPT={pid}\0").into_bytes())
}

/// Review of the sweeper: a read of an environment that blocks (a process stuck in the kernel)
/// held the one sweeper thread. Now it holds only the reader's helper: the read gives up, the
/// reads after it give up at once while it blocks, and reading works again once it answers.
#[test]
fn a_read_of_an_environment_that_blocks_holds_only_the_helper() {
    let mut r = EnvReader::new(slow_read);
    let env = |pid: u32| Some(Some(format!("JOB_ID=j\0JOB_ATTEMPT={pid}\0").into_bytes()));
    // The first read starts the helper: on a loaded machine it may miss the limit once.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        match r.read(2) {
            Some(got) => break assert_eq!(Some(got), env(2)),
            None => assert!(Instant::now() < until, "the helper never answered"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(r.read(1), None, "a blocked read was waited for");
    assert_eq!(r.read(3), None, "a read while the helper is held");
    RELEASED.store(true, std::sync::atomic::Ordering::Release);
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        match r.read(3) {
            Some(got) => break assert_eq!(Some(got), env(3)),
            None => assert!(Instant::now() < until, "the helper did not come back"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
