//! A start that failed at `execve` itself, told apart from the steps before it (`chdir`,
//! `setuid`, the private working directory): the OS says "No such file or directory" or
//! "Permission denied" for the program and for a directory alike, and only a failure of the
//! program is a configuration error no retry can mend (see [`crate::local`]).

use std::io;

/// The errno of a failed `execve`, carried inside an [`io::Error`] (see [`exec_failed`]); its
/// text is the OS's own.
#[derive(Debug)]
struct ExecFailed(i32);

impl std::fmt::Display for ExecFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        io::Error::from_raw_os_error(self.0).fmt(f)
    }
}

impl std::error::Error for ExecFailed {}

/// The error of an `execve` that failed with `errno`: of the same kind and text as
/// `io::Error::from_raw_os_error(errno)`, and known by [`exec_errno`] to come from the exec.
pub(crate) fn exec_failed(errno: i32) -> io::Error {
    io::Error::new(
        io::Error::from_raw_os_error(errno).kind(),
        ExecFailed(errno),
    )
}

/// The errno of `e` when it is an `execve`'s ([`exec_failed`]).
pub(crate) fn exec_errno(e: &io::Error) -> Option<i32> {
    e.get_ref()?.downcast_ref::<ExecFailed>().map(|x| x.0)
}

/// The errno of `e` whether it came from `execve` or from another step (0: none).
pub(crate) fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().or_else(|| exec_errno(e)).unwrap_or(0)
}

/// Whether an `execve` failing with `errno` says the program itself cannot run: missing
/// (`ENOENT`, `ENOTDIR` for a path through a file), not executable (`EACCES`), not a program
/// (`ENOEXEC`), or a path the kernel refuses (`ELOOP`, `ENAMETOOLONG`). Not `E2BIG` (the job's
/// own arguments) nor the host's exhaustion (`ENOMEM`, `EAGAIN`, `EMFILE`, `ENFILE`).
pub(crate) fn is_program_errno(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENOENT
            | libc::ENOTDIR
            | libc::EACCES
            | libc::ENOEXEC
            | libc::ELOOP
            | libc::ENAMETOOLONG
    )
}

/// A start that failed because the program cannot run: [`crate::RunnerError::LaunchFinal`],
/// a configuration error no retry can mend (the job ends ERROR at once). Known when `execve`
/// itself failed (the spawner tells so), or when `exec_only`: nothing but the exec can fail that
/// way (a forked start that enters no directory). `what` says what was being done.
pub(crate) fn program_error(
    what: &str,
    e: &io::Error,
    exec_only: bool,
) -> Option<crate::RunnerError> {
    let errno = exec_errno(e).or(if exec_only { e.raw_os_error() } else { None })?;
    is_program_errno(errno).then(|| {
        crate::RunnerError::LaunchFinal(format!(
            "{what}: {e}: the runner's `command` names a program that is missing or cannot be \
             executed"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exec_failure_keeps_its_kind_and_text_and_is_told_apart() {
        let e = exec_failed(libc::ENOENT);
        let plain = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(e.kind(), plain.kind());
        assert_eq!(e.to_string(), plain.to_string());
        assert_eq!(exec_errno(&e), Some(libc::ENOENT));
        assert_eq!(exec_errno(&plain), None);
        assert_eq!(errno_of(&e), libc::ENOENT);
        assert_eq!(errno_of(&plain), libc::ENOENT);
        assert_eq!(errno_of(&io::Error::other("x")), 0);
        assert!(is_program_errno(libc::EACCES));
        assert!(!is_program_errno(libc::E2BIG));
        assert!(!is_program_errno(libc::EMFILE));
    }
}
