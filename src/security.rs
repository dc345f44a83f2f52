//! Keeping the master key out of a job's reach (see docs/security.md).
//!
//! - [`MasterKey`]: the key in memory, zeroed when dropped, never printed.
//! - [`scrub_env`]: once the configuration is read, the secret `RUNYARD_*` variables leave the
//!   process environment, and their bytes are zeroed in the initial environment block that the
//!   kernel shows in `/proc/PID/environ` (removing a variable with `unsetenv` alone leaves it
//!   there).
//! - [`harden_process`]: `PR_SET_DUMPABLE` off, so that processes of the same user (a job run
//!   without `user`) can neither read `/proc/PID/environ` or `/proc/PID/mem` nor ptrace the
//!   server; and a private umask (0o077) so that every file the server creates is 0600.
//! - [`secure_data_dir`]: the data directory is 0700.
//!
//! `runyard serve` and `runyard worker` call the first three before the runtime starts; a program
//! embedding [`crate::server::ServerBuilder`] should call them too (the library does not change
//! process-wide settings by itself), while [`secure_data_dir`] runs on every start.

use std::fmt;
use std::ops::Deref;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use zeroize::Zeroizing;

/// Environment variables that hold secrets: the master key, the Redis URL (it may carry a
/// password, and whoever reaches the Redis can rewrite any job) and the JWT secret (whoever holds
/// it mints any token), also as part of the whole `[auth]` table (`RUNYARD_AUTH='{jwt_secret =
/// ...}'`). Matched without regard to case, as the configuration reads them.
pub const SECRET_ENV: &[&str] = &[
    "RUNYARD_MASTER_KEY",
    "RUNYARD_REDIS",
    "RUNYARD_AUTH",
    "RUNYARD_AUTH__JWT_SECRET",
];

/// The master key that job secrets and signed URLs derive from.
///
/// Zeroed when dropped; `Debug` prints `MasterKey(***)`. It dereferences to the key bytes, for
/// the HMAC functions that take them.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<Vec<u8>>);

impl MasterKey {
    /// Wraps key bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }
}

impl Deref for MasterKey {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

/// Turns core dumps, `/proc/PID/{environ,mem}` and ptrace off for processes of the same user,
/// and sets the umask to 0o077 (jobs still start with the umask the process had: see
/// [`runyard_runners::isolation::set_job_umask`]). Call it once, early, in the main thread.
///
/// A job's process becomes dumpable again when it executes its program (its credentials do not
/// change), so this does not affect jobs.
pub fn harden_process() {
    // Safety: plain syscalls on this process.
    unsafe {
        #[cfg(target_os = "linux")]
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "cannot turn PR_SET_DUMPABLE off: processes of this user can read this one's memory"
            );
        }
        let old = libc::umask(0o077);
        runyard_runners::isolation::set_job_umask(old as u32);
    }
}

extern "C" {
    static mut environ: *mut *mut libc::c_char;
}

/// Removes `names` (in any case and with blanks around, as the configuration reads them:
/// `RUNYARD_Master_Key` configures the server as
/// `RUNYARD_MASTER_KEY` does) from the environment and zeroes their bytes where the kernel shows
/// them (`/proc/PID/environ` reads the environment block the process started with, which
/// `unsetenv` does not change).
///
/// # Safety
/// Changes the process environment: call it while no other thread can read or write the
/// environment, i.e. in `main` before any thread (the async runtime included) starts.
pub unsafe fn scrub_env(names: &[&str]) {
    let (start, end) = initial_env_block().unwrap_or((0, 0));
    let mut in_block = Vec::new();
    let mut found: Vec<std::ffi::OsString> = Vec::new();
    // Safety (caller): no other thread touches `environ` meanwhile.
    let mut p = environ;
    while !p.is_null() && !(*p).is_null() {
        let entry = *p;
        let bytes = std::ffi::CStr::from_ptr(entry).to_bytes();
        let addr = entry as usize;
        // The name as the configuration reads it: trimmed, in any case.
        let name = bytes.iter().position(|&b| b == b'=').map(|eq| &bytes[..eq]);
        let named = name.filter(|name| {
            names
                .iter()
                .any(|n| name.trim_ascii().eq_ignore_ascii_case(n.as_bytes()))
        });
        if let Some(name) = named {
            use std::os::unix::ffi::OsStrExt;
            found.push(std::ffi::OsStr::from_bytes(name).to_os_string());
            if addr >= start && addr.saturating_add(bytes.len()) < end {
                in_block.push((entry, bytes.len()));
            }
        }
        p = p.add(1);
    }
    for n in found {
        std::env::remove_var(n);
    }
    // No longer referenced by `environ`; the block itself lives as long as the process.
    for (entry, len) in in_block {
        std::ptr::write_bytes(entry, 0, len);
    }
}

/// The address range of the environment block the kernel set up at exec (fields 50 and 51 of
/// `/proc/self/stat`).
fn initial_env_block() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let mut f = after.split_whitespace().skip(47);
    let start = f.next()?.parse().ok()?;
    let end = f.next()?.parse().ok()?;
    Some((start, end))
}

/// Warns when the configuration file at `path` holds a secret (`master_key`, `auth.jwt_secret`,
/// a `redis` URL with a password) and users other than its owner may read it: a local job run
/// as another `user` (the recommended isolation) cannot open `data_dir/master.key` but could read
/// such a file, and whoever holds `jwt_secret` mints any scope.
pub fn warn_if_config_readable(path: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    // Readable by anyone, or writable by more than its owner (worse: a writer sets the commands
    // the server runs). A file its group may read (`root:runyard 0640`) is the usual way, unless
    // a local runner runs its jobs as a user of that group.
    let mode = meta.permissions().mode() & 0o777;
    let others = mode & 0o026 != 0;
    if !others && mode & 0o040 == 0 {
        return;
    }
    let Some(table) = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
    else {
        return;
    };
    let held = secrets_held(&table);
    if held.is_empty() {
        return;
    }
    if others {
        tracing::warn!(
            file = %path.display(),
            mode = %format!("{mode:o}"),
            secrets = %held.join(", "),
            "the configuration file holds secrets and other users may read it (a job run as \
             another `user` could) or write it: `chmod 600` (or 640) it, or pass them as \
             RUNYARD_* environment variables (docs/security.md)"
        );
    } else if let Some(runner) = runner_with_job_user_in_group(&table, meta.gid()) {
        tracing::warn!(
            file = %path.display(),
            mode = %format!("{mode:o}"),
            secrets = %held.join(", "),
            runner = %runner,
            "the configuration file holds secrets and its group holds the user a local runner \
             runs its jobs as (a job could read it): `chmod 600` it, give it a group no job's \
             user is in, or pass the secrets as RUNYARD_* environment variables \
             (docs/security.md)"
        );
    }
}

/// Warns when this process runs as root and runs, beside runners whose jobs are kept from its
/// memory (containers; local jobs run as a `user` other than root), a local runner whose jobs
/// are not: those jobs are root too, and root reads the server's memory (`CAP_SYS_PTRACE`
/// passes its being not dumpable), the master key in it, and with the key it forges the
/// reports of every job, the isolated runners' included (a probe did). `runners`: each local,
/// docker and kube runner's name and whether its jobs are so kept.
pub fn warn_if_root_jobs_beside_isolated(runners: &[(String, bool)]) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    if let Some(name) = root_runner_beside_isolated(runners) {
        tracing::warn!(
            runner = %name,
            "this server runs as root and local runner {name} runs its jobs as root (no `user`, \
             or root): they can read the master key from the server's memory, and so forge the \
             reports of every job, those of containers and of runners with a `user` included; \
             give it a `user` other than root (docs/security.md)"
        );
    }
}

/// The first runner (of `runners`: name, isolated) whose jobs are not isolated, when another's
/// are.
fn root_runner_beside_isolated(runners: &[(String, bool)]) -> Option<String> {
    runners.iter().find(|(_, iso)| *iso)?;
    runners.iter().find(|(_, iso)| !iso).map(|(n, _)| n.clone())
}

/// The first local runner (its `name`, else `runners[i]`) whose jobs run as a `user` or
/// `group` of which `gid` is one of the groups: its primary group, its `group`, or a group the
/// user database gives the user. Names or ids that do not resolve are skipped (the runner's own
/// check refuses them).
fn runner_with_job_user_in_group(table: &toml::Table, gid: u32) -> Option<String> {
    use nix::unistd::{Gid, Group, Uid, User};
    let runners = table.get("runners")?.as_array()?;
    runners.iter().enumerate().find_map(|(i, r)| {
        let local = r.get("kind").and_then(|k| k.as_str()) == Some("local");
        let user = r.get("user");
        let group = r.get("group");
        if !local || (user.is_none() && group.is_none()) {
            return None;
        }
        let entry = match user {
            Some(toml::Value::String(n)) => User::from_name(n).ok().flatten(),
            Some(toml::Value::Integer(id)) => u32::try_from(*id)
                .ok()
                .and_then(|id| User::from_uid(Uid::from_raw(id)).ok().flatten()),
            _ => None,
        };
        let group_id = match group {
            Some(toml::Value::String(n)) => Group::from_name(n).ok().flatten().map(|g| g.gid),
            Some(toml::Value::Integer(id)) => u32::try_from(*id).ok().map(Gid::from_raw),
            _ => None,
        };
        let mut gids: Vec<u32> = group_id.iter().map(|g| g.as_raw()).collect();
        if let Some(e) = &entry {
            let primary = group_id.unwrap_or(e.gid);
            gids.push(primary.as_raw());
            if let Ok(name) = std::ffi::CString::new(e.name.clone()) {
                if let Ok(list) = nix::unistd::getgrouplist(&name, primary) {
                    gids.extend(list.into_iter().map(Gid::as_raw));
                }
            }
        }
        gids.contains(&gid).then(|| {
            r.get("name")
                .and_then(|n| n.as_str())
                .map_or_else(|| format!("runners[{i}]"), str::to_string)
        })
    })
}

/// Creates the data directory with mode 0700, or narrows an existing one of this user's to 0700
/// (with a warning when it was open to others). Refused, nothing changed: a path that is not a
/// directory, and a shared directory open to others with the sticky bit (`/tmp`: narrowing it
/// would lock every other user out of it). A directory of another user's that is open to
/// others is left as it is, with a warning (a volume mounted for a group, say).
pub fn secure_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("`data_dir`: cannot create {}", dir.display()))
        }
        Err(e) => {
            return Err(e).with_context(|| format!("`data_dir`: cannot read {}", dir.display()))
        }
        Ok(m) => m,
    };
    if !m.is_dir() {
        anyhow::bail!("`data_dir`: {} is not a directory", dir.display());
    }
    let mode = m.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    if mode & 0o1000 != 0 {
        anyhow::bail!(
            "`data_dir`: {} is a shared directory (mode {mode:o}, as /tmp is): runyard keeps its \
             data closed to other users and will not close this one; give it a directory of its \
             own (e.g. {})",
            dir.display(),
            dir.join("runyard").display()
        );
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me {
        tracing::warn!(
            data_dir = %dir.display(),
            owner = m.uid(),
            "data_dir is open to other users (mode {mode:o}) and owned by another user: left as \
             it is; other users may read the job store"
        );
        return Ok(());
    }
    match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        Ok(()) => tracing::warn!(
            data_dir = %dir.display(),
            "data_dir was open to other users (mode {mode:o}): narrowed to 0700"
        ),
        Err(e) => tracing::warn!(
            data_dir = %dir.display(),
            error = %e,
            "data_dir is open to other users (mode {mode:o}) and cannot be narrowed to 0700: \
             other users may read the job store"
        ),
    }
    Ok(())
}

/// The secrets a configuration file's `table` holds, by name.
fn secrets_held(table: &toml::Table) -> Vec<&'static str> {
    let mut held = Vec::new();
    if table.contains_key("master_key") {
        held.push("master_key");
    }
    if table
        .get("auth")
        .and_then(|a| a.get("jwt_secret"))
        .is_some()
    {
        held.push("auth.jwt_secret");
    }
    // The driver's own reading: `user:password@` and `unix://...?pass=` alike.
    if table
        .get("redis")
        .and_then(|r| r.as_str())
        .and_then(|u| redis::IntoConnectionInfo::into_connection_info(u).ok())
        .is_some_and(|info| info.redis.password.is_some())
    {
        held.push("redis (its password)");
    }
    held
}

#[cfg(test)]
mod tests {
    /// A root server with one local runner isolated by `user` and one not: the second is named
    /// (its root jobs can read the server's memory and forge the isolated ones' reports); with
    /// no isolated runner beside it there is nothing to say (every job is as trusted as the
    /// server, as the docs say).
    #[test]
    fn a_runner_without_user_beside_an_isolated_one_is_named() {
        let r = |n: &str, user: bool| (n.to_string(), user);
        let named = super::root_runner_beside_isolated;
        assert_eq!(named(&[r("nb", true), r("py", false)]), Some("py".into()));
        assert_eq!(named(&[r("py", false), r("sh", false)]), None);
        assert_eq!(named(&[r("nb", true)]), None);
        assert_eq!(named(&[]), None);
    }

    use super::*;

    #[test]
    fn a_redis_password_in_the_file_is_a_secret_in_either_form() {
        let held = |text: &str| secrets_held(&text.parse::<toml::Table>().unwrap());
        assert_eq!(
            held(r#"redis = "redis://:pw@h/0""#),
            ["redis (its password)"]
        );
        assert_eq!(
            held(r#"redis = "unix:///run/r.sock?pass=pw""#),
            ["redis (its password)"]
        );
        assert!(held(r#"redis = "unix:///run/r.sock?db=1""#).is_empty());
        assert!(held(r#"redis = "redis://h/0""#).is_empty());
    }

    #[test]
    fn master_key_is_not_printed() {
        let k = MasterKey::new(b"very-secret-master-key".to_vec());
        assert_eq!(format!("{k:?}"), "MasterKey(***)");
        assert_eq!(&*k, b"very-secret-master-key");
    }

    #[test]
    fn data_dir_is_created_private_and_narrowed() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/data");
        secure_data_dir(&d).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        secure_data_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        // A file is refused and keeps its mode; so is a shared (sticky) directory.
        let f = t.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = secure_data_dir(&f).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        assert_eq!(mode(&f), 0o644);
        let shared = t.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = secure_data_dir(&shared).unwrap_err().to_string();
        assert!(e.contains("shared directory"), "{e}");
        let full = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o7777;
        assert_eq!(full, 0o1777);
    }

    #[test]
    fn the_initial_environment_block_is_found() {
        let (start, end) = initial_env_block().unwrap();
        assert!(start > 0 && end > start, "{start} {end}");
    }
}
