//! A small tmpfs to fill up (the full-disk tests): mounted under a temporary directory, unmounted
//! when dropped. Needs root; elsewhere [`mount`] says so and gives nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs, unmounted (lazily) when dropped, before its directory goes.
pub struct Mounted {
    /// The mount point.
    pub path: PathBuf,
    /// Where it is (dropped after the unmount).
    pub dir: tempfile::TempDir,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A tmpfs of `size` (`mount -o size=`, e.g. `16m`) at `DIR/mnt` in a new temporary directory;
/// `None` (said on stderr) when not root or the mount fails: the test then passes without
/// running.
pub fn mount(size: &str) -> Option<Mounted> {
    // Safety: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a tmpfs needs root");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mnt");
    std::fs::create_dir(&path).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&path)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: cannot mount a tmpfs here");
        return None;
    }
    Some(Mounted { path, dir })
}

/// Writes `dir/filler` until the filesystem has no room left; removing that file gives the
/// room back.
pub fn fill(dir: &Path) -> std::fs::File {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.flush();
    f
}
