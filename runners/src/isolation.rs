//! Running a local job as another user and group, with resource limits.
//!
//! A local runner with `user` / `group` starts its jobs under that identity: between `fork` and
//! `exec` the child drops its supplementary groups (to the user's own), then sets its group id,
//! then its user id, in that order (after `setuid` it could no longer change groups). `rlimits`
//! are set in the child just before, so that a root server can also set limits above its own,
//! and the job's stdout and stderr pipes are given to its user (`fchown`), so that it can re-open
//! them by name (`/dev/stdout`) as a job of the server's own user can.
//!
//! Names are resolved once, when the configuration is loaded ([`Isolation::resolve`]): an unknown
//! user or group stops the server with a message naming the key. The work done in the child
//! ([`Isolation::apply`]) is async-signal-safe: plain system calls on values computed before
//! `fork`, no allocation, no lock.

use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A user or a group: a name (`"nobody"`) or a numeric id (`65534`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Principal {
    /// A numeric id, used as is (it need not be in the user database).
    Id(u32),
    /// A name, looked up in the user (or group) database.
    Name(String),
}

/// A limit given as a number or as text with a unit (`"10m"`, `"512MiB"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Amount {
    /// Seconds (`cpu`) or bytes (sizes).
    Number(u64),
    /// A duration (`"90s"`, `"10m"`) or a size (`"512MiB"`, `"2g"`).
    Text(String),
}

/// `rlimits` of a local runner: set on the job's process with `setrlimit` (soft and hard limit
/// alike), inherited by whatever it starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rlimits {
    /// CPU time of each process, in seconds or as a duration (`"10m"`): `RLIMIT_CPU`. A process
    /// over it is killed (SIGKILL).
    #[serde(default)]
    pub cpu: Option<Amount>,
    /// Address space of each process (`"512MiB"`): `RLIMIT_AS`. Also accepted as `as`.
    #[serde(default, alias = "as")]
    pub memory: Option<Amount>,
    /// Open files of each process: `RLIMIT_NOFILE`.
    #[serde(default)]
    pub nofile: Option<u64>,
    /// Processes (threads included) of the job's *user*, all of them together: `RLIMIT_NPROC`.
    /// Meaningful with `user` (root ignores it).
    #[serde(default)]
    pub nproc: Option<u64>,
    /// Largest file a process may write (`"1GiB"`): `RLIMIT_FSIZE`.
    #[serde(default)]
    pub fsize: Option<Amount>,
}

impl Rlimits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self == &Rlimits::default()
    }
}

/// Parses a size: bytes as a number, or text such as `512MiB`, `512m`, `2 GB`, `100k`. K, M, G
/// and T are powers of 1024 with or without `B` / `iB` (as in Docker's `--memory`).
pub fn parse_size(a: &Amount) -> Result<u64, String> {
    let s = match a {
        Amount::Number(n) => return Ok(*n),
        Amount::Text(s) => s,
    };
    let lower = s.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let shift = match unit.trim() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("`{s}` is not a size like 512MiB, 2g or 1048576")),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 512MiB, 2g or 1048576"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Parses a CPU time: seconds as a number, or a duration such as `90s` or `10m` (rounded up to
/// whole seconds).
pub fn parse_cpu(a: &Amount) -> Result<u64, String> {
    let secs = match a {
        Amount::Number(n) => *n,
        Amount::Text(s) => {
            let d: Duration = humantime::parse_duration(s.trim())
                .map_err(|_| format!("`{s}` is not a duration like 90s or 10m"))?;
            d.as_secs() + u64::from(d.subsec_nanos() > 0)
        }
    };
    if secs == 0 {
        return Err("must be at least 1 second".into());
    }
    Ok(secs)
}

/// Who a job runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id (`None`: the server's).
    pub uid: Option<libc::uid_t>,
    /// The group id.
    pub gid: libc::gid_t,
    /// The supplementary groups (the user's own groups, or just `gid`).
    pub groups: Vec<libc::gid_t>,
    /// The user's name and home directory, when it is in the user database (for `USER`,
    /// `LOGNAME` and `HOME`).
    pub account: Option<(String, String)>,
}

/// The resolved `user`, `group` and `rlimits` of a local runner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Isolation {
    /// Who the job runs as (`None`: as the server).
    pub identity: Option<Identity>,
    /// `(resource, value)` pairs for `setrlimit`.
    limits: Vec<(LimitResource, libc::rlim_t)>,
}

#[cfg(target_os = "linux")]
type LimitResource = libc::__rlimit_resource_t;
#[cfg(not(target_os = "linux"))]
type LimitResource = libc::c_int;

/// Which key of the configuration was wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationError {
    /// `user`, `group` or `rlimits.<name>`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn bad(key: &str, message: impl Into<String>) -> IsolationError {
    IsolationError {
        key: key.into(),
        message: message.into(),
    }
}

impl Isolation {
    /// Resolves names to ids and checks the limits. Reads the user and group databases.
    pub fn resolve(
        user: Option<&Principal>,
        group: Option<&Principal>,
        rlimits: &Rlimits,
    ) -> Result<Self, IsolationError> {
        let group_id = group.map(gid_of).transpose()?;
        let identity = match user {
            None => group_id.map(|gid| Identity {
                uid: None,
                gid,
                groups: vec![gid],
                account: None,
            }),
            Some(u) => Some(user_identity(u, group_id)?),
        };
        let root = nix::unistd::geteuid().is_root();
        check_capabilities(identity.as_ref(), root)?;
        let limits = resolve_limits(rlimits, root)?;
        Ok(Isolation { identity, limits })
    }

    /// The limits as `(resource, value)` pairs (what the spawner process is sent).
    // The resource and limit types differ between platforms (and C libraries).
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn limit_pairs(&self) -> Vec<(u32, u64)> {
        self.limits
            .iter()
            .map(|(r, v)| (*r as u32, *v as u64))
            .collect()
    }

    /// An isolation made of an identity and [`Isolation::limit_pairs`] (in the spawner process).
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn from_parts(identity: Option<Identity>, limits: &[(u32, u64)]) -> Self {
        Isolation {
            identity,
            limits: limits
                .iter()
                .map(|(r, v)| (*r as LimitResource, *v as libc::rlim_t))
                .collect(),
        }
    }

    /// Whether the job runs as another user or group.
    pub fn switches_user(&self) -> bool {
        self.identity.as_ref().is_some_and(|i| i.uid.is_some())
    }

    /// Warns (once per runner, when it is made) when its jobs run as another user but this
    /// server cannot give them their output pipes (no `CAP_CHOWN` in its effective set: root
    /// may lack it too, e.g. in a container started with `--cap-drop CHOWN`): see
    /// [`give_output`].
    pub fn warn_if_output_stays_the_servers(&self, command: &str) {
        if self.switches_user() && !has_capability(0) {
            tracing::warn!(
                command,
                "a local runner's jobs run as another `user` but this server (no CAP_CHOWN) \
                 cannot give them their output pipes: they write to descriptors 1 \
                 and 2, but cannot re-open /dev/stdout or /dev/stderr"
            );
        }
    }

    /// In the child, between `fork` and `exec`, with descriptors 1 and 2 already the job's
    /// output pipes: sets the limits, gives those pipes to the job's user ([`give_output`]), then
    /// sets the groups, the group id and the user id; then, as the job's user, enters `workdir`
    /// (creating it first, mode 0700, when its flag says so).
    ///
    /// # Safety
    /// Only call in a freshly forked child (e.g. from `pre_exec`): it changes the identity of the
    /// calling process and the owner of its descriptors 1 and 2. It makes only async-signal-safe
    /// calls.
    pub unsafe fn apply(&self, workdir: Option<(&CStr, bool)>) -> std::io::Result<()> {
        let check = |r: libc::c_int| {
            if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        for (res, v) in &self.limits {
            let l = libc::rlimit {
                rlim_cur: *v,
                rlim_max: *v,
            };
            check(libc::setrlimit(*res, &l))?;
        }
        if let Some(id) = &self.identity {
            if let Some(uid) = id.uid {
                give_output(uid, id.gid);
            }
            check(libc::setgroups(id.groups.len() as _, id.groups.as_ptr()))?;
            check(libc::setgid(id.gid))?;
            if let Some(uid) = id.uid {
                check(libc::setuid(uid))?;
            }
        }
        if let Some((dir, create)) = workdir {
            if create {
                check(libc::mkdir(dir.as_ptr(), 0o700))?;
            }
            check(libc::chdir(dir.as_ptr()))?;
        }
        Ok(())
    }
}

/// In the child, before the identity changes: makes the job's stdout and stderr pipes
/// (descriptors 1 and 2) its user's, as they are a job's that runs as the server's user. A pipe
/// is owned by whoever made it (the root server or its spawner) with mode 0600, and re-opening
/// it by name (`/dev/stdout`, `/dev/stderr`, `/proc/self/fd/N`: `echo x > /dev/stderr`, `tee
/// /dev/stderr`) checks that owner: the job's user was refused. Only the pipe's owner changes (the
/// server's read end is the same pipe, already open: unaffected); the job gets no other descriptor.
/// A server without `CAP_CHOWN` (not root, only `CAP_SETUID` and `CAP_SETGID`; or root with it
/// dropped) cannot: the pipes
/// stay its own, as before (a warning at start says so), and the job still writes to
/// descriptors 1 and 2.
///
/// # Safety
/// Only in the child, with 1 and 2 already the job's pipes (`fchown` is async-signal-safe).
unsafe fn give_output(uid: libc::uid_t, gid: libc::gid_t) {
    // The result is not checked: see above.
    libc::fchown(1, uid, gid);
    libc::fchown(2, uid, gid);
}

/// The gid of a group name or id.
fn gid_of(g: &Principal) -> Result<libc::gid_t, IsolationError> {
    use nix::unistd::Group;
    match g {
        Principal::Id(id) => Ok(*id),
        Principal::Name(n) => match Group::from_name(n) {
            Ok(Some(g)) => Ok(g.gid.as_raw()),
            Ok(None) => Err(bad("group", format!("no such group `{n}`"))),
            Err(e) => Err(bad("group", format!("cannot look up group `{n}`: {e}"))),
        },
    }
}

/// The identity of a job run as `u`: its uid, its group (`group_id`, else the user's), and its
/// supplementary groups (from the user database, when the user is in it).
fn user_identity(u: &Principal, group_id: Option<libc::gid_t>) -> Result<Identity, IsolationError> {
    use nix::unistd::{Gid, Uid, User};
    let (uid, entry) = match u {
        Principal::Id(id) => (
            *id,
            User::from_uid(Uid::from_raw(*id))
                .map_err(|e| bad("user", format!("cannot look up user {id}: {e}")))?,
        ),
        Principal::Name(n) => match User::from_name(n) {
            Ok(Some(e)) => (e.uid.as_raw(), Some(e)),
            Ok(None) => return Err(bad("user", format!("no such user `{n}`"))),
            Err(e) => return Err(bad("user", format!("cannot look up user `{n}`: {e}"))),
        },
    };
    let gid = match (group_id, &entry) {
        (Some(g), _) => g,
        (None, Some(e)) => e.gid.as_raw(),
        (None, None) => {
            return Err(bad(
                "group",
                format!("user {uid} is not in the user database: set `group` too"),
            ))
        }
    };
    let groups = match &entry {
        Some(e) => {
            let name = CString::new(e.name.clone())
                .map_err(|_| bad("user", "the user name holds a NUL byte"))?;
            let mut gs: Vec<libc::gid_t> = nix::unistd::getgrouplist(&name, Gid::from_raw(gid))
                .map_err(|e| bad("user", format!("cannot list the groups of the user: {e}")))?
                .into_iter()
                .map(Gid::as_raw)
                .collect();
            if !gs.contains(&gid) {
                gs.push(gid);
            }
            gs
        }
        None => vec![gid],
    };
    Ok(Identity {
        uid: Some(uid),
        gid,
        groups,
        account: entry.map(|e| (e.name, e.dir.to_string_lossy().into_owned())),
    })
}

/// setgroups and setgid need CAP_SETGID, setuid CAP_SETUID: refuse now rather than fail every
/// launch.
fn check_capabilities(identity: Option<&Identity>, root: bool) -> Result<(), IsolationError> {
    if let Some(id) = identity {
        let needed = [(6, "CAP_SETGID")]
            .into_iter()
            .chain(id.uid.map(|_| (7, "CAP_SETUID")));
        let missing: Vec<&str> = needed
            .filter(|(bit, _)| !root && !has_capability(*bit))
            .map(|(_, name)| name)
            .collect();
        if !missing.is_empty() {
            return Err(bad(
                if id.uid.is_some() { "user" } else { "group" },
                format!(
                    "running jobs as another user or group needs a server running as root \
                     (or with {})",
                    missing.join(" and ")
                ),
            ));
        }
    }
    Ok(())
}

/// The resource limits, checked (without root, none above the server's own hard limits).
fn resolve_limits(
    rlimits: &Rlimits,
    root: bool,
) -> Result<Vec<(LimitResource, libc::rlim_t)>, IsolationError> {
    let mut limits = Vec::new();
    let mut add = |key: &str, res: LimitResource, v: u64| -> Result<(), IsolationError> {
        let key = format!("rlimits.{key}");
        let v = libc::rlim_t::try_from(v).map_err(|_| bad(&key, "is too large"))?;
        if v == libc::RLIM_INFINITY {
            return Err(bad(&key, "is too large"));
        }
        if !root {
            // Without root, a hard limit can only be lowered.
            let mut cur = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // Safety: plain syscall into a local struct.
            if unsafe { libc::getrlimit(res, &mut cur) } == 0
                && cur.rlim_max != libc::RLIM_INFINITY
                && v > cur.rlim_max
            {
                return Err(bad(
                    &key,
                    format!(
                        "{v} is above this server's own hard limit ({}); only root can raise it",
                        cur.rlim_max
                    ),
                ));
            }
        }
        limits.push((res, v));
        Ok(())
    };
    if let Some(c) = &rlimits.cpu {
        let v = parse_cpu(c).map_err(|m| bad("rlimits.cpu", m))?;
        add("cpu", libc::RLIMIT_CPU, v)?;
    }
    if let Some(m) = &rlimits.memory {
        let v = parse_size(m).map_err(|e| bad("rlimits.memory", e))?;
        if v < 1 << 20 {
            return Err(bad(
                "rlimits.memory",
                "must be at least 1MiB (no program starts below that)",
            ));
        }
        add("memory", libc::RLIMIT_AS, v)?;
    }
    if let Some(n) = rlimits.nofile {
        if n < 3 {
            return Err(bad("rlimits.nofile", "must be at least 3"));
        }
        add("nofile", libc::RLIMIT_NOFILE, n)?;
    }
    if let Some(n) = rlimits.nproc {
        if n == 0 {
            return Err(bad("rlimits.nproc", "must be at least 1"));
        }
        add("nproc", libc::RLIMIT_NPROC, n)?;
    }
    if let Some(f) = &rlimits.fsize {
        let v = parse_size(f).map_err(|e| bad("rlimits.fsize", e))?;
        add("fsize", libc::RLIMIT_FSIZE, v)?;
    }
    Ok(limits)
}

/// Whether this process has capability number `bit` in its effective set (`CapEff` of
/// `/proc/self/status`).
fn has_capability(bit: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1u64 << bit) != 0)
}

/// `u32::MAX`: not set.
static JOB_UMASK: AtomicU32 = AtomicU32::new(u32::MAX);

/// Records the umask jobs start with. A server that tightens its own umask (so its data files are
/// private) calls this with the umask it had before, so that jobs still create files as the
/// administrator expects.
pub fn set_job_umask(mask: u32) {
    JOB_UMASK.store(mask & 0o777, Ordering::Relaxed);
}

/// The umask set with [`set_job_umask`], if any.
pub fn job_umask() -> Option<u32> {
    let m = JOB_UMASK.load(Ordering::Relaxed);
    (m != u32::MAX).then_some(m)
}

/// In the child, before `exec`: marks every descriptor above 2 close-on-exec, so that the job
/// gets 0, 1 and 2 (already its own pipes) and nothing the server inherited from whoever started
/// it (a supervisor's log pipe, a shell's open file). `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`
/// (Linux 5.11). Where that fails (an older kernel, a seccomp profile refusing it) nothing is
/// done: marking each of 65,536 descriptors cost 35-60 ms per launch, in the spawner's one child
/// at a time (a review's finding); inherited descriptors then reach jobs as before.
///
/// # Safety
/// Only in a freshly forked or cloned child with its own descriptor table (`pre_exec`, the
/// spawner's child): it makes only async-signal-safe calls.
pub unsafe fn cloexec_inherited() {
    let all = libc::c_uint::MAX;
    let flag = libc::CLOSE_RANGE_CLOEXEC as libc::c_uint;
    // The result is not checked: see above.
    libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, all, flag);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Amount {
        Amount::Text(s.into())
    }

    #[test]
    fn sizes_and_cpu_times_parse() {
        assert_eq!(parse_size(&text("512MiB")), Ok(512 << 20));
        assert_eq!(parse_size(&text("512m")), Ok(512 << 20));
        assert_eq!(parse_size(&text("2 GB")), Ok(2 << 30));
        assert_eq!(parse_size(&Amount::Number(4096)), Ok(4096));
        assert!(parse_size(&text("lots")).is_err());
        assert!(parse_size(&text("1.5g")).is_err());
        assert!(parse_size(&text("99999999999999T")).is_err());
        assert_eq!(parse_cpu(&text("10m")), Ok(600));
        assert_eq!(parse_cpu(&text("1500ms")), Ok(2));
        assert_eq!(parse_cpu(&Amount::Number(30)), Ok(30));
        assert!(parse_cpu(&Amount::Number(0)).is_err());
        assert!(parse_cpu(&text("soon")).is_err());
    }

    #[test]
    fn users_and_groups_resolve_and_unknown_ones_name_the_key() {
        let root = Isolation::resolve(
            Some(&Principal::Name("root".into())),
            None,
            &Rlimits::default(),
        )
        .unwrap();
        let id = root.identity.unwrap();
        assert_eq!((id.uid, id.gid), (Some(0), 0));
        assert!(id.groups.contains(&0));
        assert_eq!(id.account.unwrap().0, "root");
        let e = Isolation::resolve(
            Some(&Principal::Name("no-such-user-here".into())),
            None,
            &Rlimits::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "user");
        assert!(e.message.contains("no-such-user-here"), "{e:?}");
        let e = Isolation::resolve(
            None,
            Some(&Principal::Name("no-such-group-here".into())),
            &Rlimits::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "group");
        // A numeric id outside the database needs a group.
        let e =
            Isolation::resolve(Some(&Principal::Id(54321)), None, &Rlimits::default()).unwrap_err();
        assert_eq!(e.key, "group");
        let ok = Isolation::resolve(
            Some(&Principal::Id(54321)),
            Some(&Principal::Id(54321)),
            &Rlimits::default(),
        )
        .unwrap();
        assert_eq!(ok.identity.unwrap().groups, vec![54321]);
    }

    #[test]
    fn bad_limits_name_the_key() {
        let lim = |r: Rlimits| {
            Isolation::resolve(None, None, &r)
                .map(|_| ())
                .unwrap_err()
                .key
        };
        assert_eq!(
            lim(Rlimits {
                memory: Some(text("12 parsecs")),
                ..Default::default()
            }),
            "rlimits.memory"
        );
        assert_eq!(
            lim(Rlimits {
                cpu: Some(Amount::Number(0)),
                ..Default::default()
            }),
            "rlimits.cpu"
        );
        assert_eq!(
            lim(Rlimits {
                nofile: Some(1),
                ..Default::default()
            }),
            "rlimits.nofile"
        );
        let ok = Isolation::resolve(
            None,
            None,
            &Rlimits {
                cpu: Some(text("10m")),
                memory: Some(text("512MiB")),
                nofile: Some(64),
                nproc: Some(256),
                fsize: Some(text("1g")),
            },
        )
        .unwrap();
        assert_eq!(ok.limits.len(), 5);
        assert!(!ok.switches_user());
    }
}
