//! Where a pid means something: this machine's boot and this process's pid namespace.
//!
//! A local job's [`crate::RunHandle`] carries [`boot_id`]; a worker's id carries [`node_id`]
//! (a short fingerprint of it), so that a job's work can be found on the claiming worker's
//! machine even when that worker hung before it recorded the handle (see
//! [`crate::Runner::unrecorded`]).

/// This machine's boot (`boot_id` changes on another machine or after a reboot) and this
/// process's pid namespace (two containers on one host share the boot id, not the pids). A
/// handle from elsewhere is never acted on.
///
/// Read once: neither changes while the process runs (a profile of 1,000 jobs showed the two
/// reads per job at 6% of the server's runtime threads).
pub(crate) fn boot_id() -> Option<String> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
        Some(format!("{}/{}", boot.trim(), ns.display()))
    })
    .clone()
}

/// [`boot_id`] in 16 hex digits (FNV-1a, 64 bits: the same in every build and process), short
/// enough for a worker id; `None` where `/proc` does not tell.
pub fn node_id() -> Option<String> {
    let boot = boot_id()?;
    let hash = boot.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    Some(format!("{hash:016x}"))
}

/// The start time of a process in clock ticks since boot (field 22 of `/proc/PID/stat`).
///
/// Read with one `read` into a buffer on the stack (`open`, `read`, `close`): the spawner does this
/// for every job it starts, and `read_to_string` made 7 system calls of it (a `statx`, then reads
/// of growing size, since `/proc` files report a size of 0).
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    // The line is about 300 bytes (the command name is at most 16) and ends with a newline.
    let mut buf = [0u8; 1024];
    let mut n = 0;
    while n < buf.len() && !buf[..n].ends_with(b"\n") {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let stat = &buf[..n];
    let after = std::str::from_utf8(&stat[stat.iter().rposition(|&b| b == b')')? + 1..]).ok()?;
    // Fields after the command: state is field 3, start time is field 22.
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_node_id_is_stable_and_short() {
        let n = super::node_id().expect("Linux has a boot id");
        assert_eq!(n.len(), 16);
        assert_eq!(Some(n), super::node_id());
    }
}
