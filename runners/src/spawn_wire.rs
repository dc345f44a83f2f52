//! What the server and its spawner process say to each other (see [`crate::spawn`]).
//!
//! Requests (server to spawner) go over a stream socket, each as a little-endian `u32` length and
//! that many bytes; replies (spawner to server) are one `SOCK_SEQPACKET` message each, the pipes of
//! a started job riding along as `SCM_RIGHTS`. Byte strings stay byte strings (environment values
//! need not be UTF-8).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use tokio::io::unix::AsyncFd;

/// One job to start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Request {
    /// Matches the reply to the request.
    pub id: u64,
    /// The program (looked up in `PATH` of the job's environment like `Command` does).
    pub program: Vec<u8>,
    /// Its arguments (without the program).
    pub args: Vec<Vec<u8>>,
    /// The whole environment of the job (nothing else is passed).
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// Directory entered before the identity changes (as the server's user).
    pub cwd: Option<Vec<u8>>,
    /// Directory entered after the identity changes (as the job's user), made first (mode 0700)
    /// when the flag says so.
    pub workdir: Option<(Vec<u8>, bool)>,
    /// The umask the job starts with (`None`: the one the server started with).
    pub umask: Option<u32>,
    /// `(resource, value)` pairs for `setrlimit`.
    pub limits: Vec<(u32, u64)>,
    /// `(uid, gid, supplementary groups)` of the job, when it runs as another user or group.
    pub identity: Option<(Option<u32>, u32, Vec<u32>)>,
}

/// What the spawner answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The job runs (its stdout and stderr pipes come with this message).
    Started {
        id: u64,
        pid: u32,
        start_time: Option<u64>,
    },
    /// The job could not be started: the OS error number (0: none), whether `execve` itself
    /// failed (the program, see [`crate::exec_error`]) and a message.
    Failed {
        id: u64,
        errno: i32,
        at_exec: bool,
        message: String,
    },
    /// A job ended: its raw wait status.
    Exited { pid: u32, status: i32 },
}

/// Appends fields to a buffer.
#[derive(Default)]
struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
            None => self.u8(0),
        }
    }
}

/// Reads fields from a buffer; `None` once it runs short.
struct In<'a>(&'a [u8]);

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()? as usize;
        Some(self.take(n)?.to_vec())
    }
    fn opt_u64(&mut self) -> Option<Option<u64>> {
        match self.u8()? {
            0 => Some(None),
            _ => Some(Some(self.u64()?)),
        }
    }
    /// A count of items, each at least `min` bytes long (a count no buffer can hold is refused
    /// before anything is allocated for it).
    fn count(&mut self, min: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.checked_mul(min)? <= self.0.len()).then_some(n)
    }
}

impl Request {
    /// The request as one frame: its length, then its fields.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut o = Out(vec![0; 4]);
        o.u64(self.id);
        o.bytes(&self.program);
        o.u32(self.args.len() as u32);
        for a in &self.args {
            o.bytes(a);
        }
        o.u32(self.env.len() as u32);
        for (k, v) in &self.env {
            o.bytes(k);
            o.bytes(v);
        }
        match &self.cwd {
            Some(c) => {
                o.u8(1);
                o.bytes(c);
            }
            None => o.u8(0),
        }
        match &self.workdir {
            Some((w, create)) => {
                o.u8(1 + u8::from(*create));
                o.bytes(w);
            }
            None => o.u8(0),
        }
        o.opt_u64(self.umask.map(u64::from));
        o.u32(self.limits.len() as u32);
        for (r, v) in &self.limits {
            o.u32(*r);
            o.u64(*v);
        }
        match &self.identity {
            Some((uid, gid, groups)) => {
                o.u8(1);
                o.opt_u64(uid.map(u64::from));
                o.u32(*gid);
                o.u32(groups.len() as u32);
                for g in groups {
                    o.u32(*g);
                }
            }
            None => o.u8(0),
        }
        let len = (o.0.len() - 4) as u32;
        o.0[..4].copy_from_slice(&len.to_le_bytes());
        o.0
    }

    /// A request from the body of a frame (without its length).
    pub(crate) fn decode(body: &[u8]) -> Option<Self> {
        let mut i = In(body);
        let id = i.u64()?;
        let program = i.bytes()?;
        let args = (0..i.count(4)?).map(|_| i.bytes()).collect::<Option<_>>()?;
        let env = (0..i.count(8)?)
            .map(|_| Some((i.bytes()?, i.bytes()?)))
            .collect::<Option<_>>()?;
        let cwd = match i.u8()? {
            0 => None,
            _ => Some(i.bytes()?),
        };
        let workdir = match i.u8()? {
            0 => None,
            f => Some((i.bytes()?, f == 2)),
        };
        let umask = i.opt_u64()?.map(|m| m as u32);
        let limits = (0..i.count(12)?)
            .map(|_| Some((i.u32()?, i.u64()?)))
            .collect::<Option<_>>()?;
        let identity = match i.u8()? {
            0 => None,
            _ => {
                let uid = i.opt_u64()?.map(|u| u as u32);
                let gid = i.u32()?;
                let groups = (0..i.count(4)?).map(|_| i.u32()).collect::<Option<_>>()?;
                Some((uid, gid, groups))
            }
        };
        Some(Request {
            id,
            program,
            args,
            env,
            cwd,
            workdir,
            umask,
            limits,
            identity,
        })
    }
}

impl Reply {
    /// The reply as one message.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut o = Out::default();
        match self {
            Reply::Started {
                id,
                pid,
                start_time,
            } => {
                o.u8(1);
                o.u64(*id);
                o.u32(*pid);
                o.opt_u64(*start_time);
            }
            Reply::Failed {
                id,
                errno,
                at_exec,
                message,
            } => {
                o.u8(2);
                o.u64(*id);
                o.u32(*errno as u32);
                o.u8(u8::from(*at_exec));
                o.bytes(message.as_bytes());
            }
            Reply::Exited { pid, status } => {
                o.u8(3);
                o.u32(*pid);
                o.u32(*status as u32);
            }
        }
        o.0
    }

    /// A reply from one message.
    #[cfg(test)]
    pub(crate) fn decode(msg: &[u8]) -> Option<Self> {
        let mut i = In(msg);
        Self::decode_from(&mut i)
    }

    /// Every reply of one message: the spawner sends a few starts and the exits it reaps together
    /// as one message (their encodings back to back; the pipes of the starts ride along, two per
    /// start, in the order of the starts).
    pub(crate) fn decode_all(msg: &[u8]) -> Option<Vec<Self>> {
        let mut i = In(msg);
        let mut all = Vec::new();
        while !i.0.is_empty() {
            all.push(Self::decode_from(&mut i)?);
        }
        Some(all)
    }

    fn decode_from(i: &mut In<'_>) -> Option<Self> {
        match i.u8()? {
            1 => Some(Reply::Started {
                id: i.u64()?,
                pid: i.u32()?,
                start_time: i.opt_u64()?,
            }),
            2 => Some(Reply::Failed {
                id: i.u64()?,
                errno: i.u32()? as i32,
                at_exec: match i.u8()? {
                    0 => false,
                    1 => true,
                    _ => return None,
                },
                message: String::from_utf8_lossy(&i.bytes()?).into_owned(),
            }),
            3 => Some(Reply::Exited {
                pid: i.u32()?,
                status: i.u32()? as i32,
            }),
            _ => None,
        }
    }
}

/// Job starts sent in one message at most (each with its two pipes). A few: the first start of a
/// burst waits for the clones of the others.
pub(crate) const STARTS_PER_MESSAGE: usize = 4;

/// Room for the descriptors of one message, aligned for `cmsghdr`: a header of 16 bytes and the
/// pipes of [`STARTS_PER_MESSAGE`] starts, with room to spare.
const CONTROL_WORDS: usize = 2 + STARTS_PER_MESSAGE + 4;

/// Sends one message with `fds` as `SCM_RIGHTS` (never raises `SIGPIPE`).
pub(crate) fn send_with_fds(sock: RawFd, msg: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr() as *mut libc::c_void,
        iov_len: msg.len(),
    };
    // Room for a few descriptors, aligned for `cmsghdr`.
    let mut control = [0u64; CONTROL_WORDS];
    // Safety: a zeroed msghdr is valid; the pointers set below outlive the call.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if !fds.is_empty() {
        let bytes = std::mem::size_of_val(fds);
        // Safety: CMSG_* compute sizes and offsets inside `control`, which is large enough for
        // the few descriptors sent here (checked).
        unsafe {
            let space = libc::CMSG_SPACE(bytes as u32) as usize;
            if space > std::mem::size_of_val(&control) {
                return Err(io::Error::other("too many descriptors for one message"));
            }
            hdr.msg_control = control.as_mut_ptr().cast();
            hdr.msg_controllen = space as _;
            let c = libc::CMSG_FIRSTHDR(&hdr);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    loop {
        // Safety: `hdr` points at live buffers.
        if unsafe { libc::sendmsg(sock, &hdr, libc::MSG_NOSIGNAL) } >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one message into `buf`, with the descriptors that came with it (close-on-exec).
/// `Ok((0, _))` at the end of the stream.
pub(crate) fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; CONTROL_WORDS];
    // Safety: a zeroed msghdr is valid; the pointers set here outlive the call.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = loop {
        // Safety: `hdr` points at live buffers.
        let n = unsafe { libc::recvmsg(sock, &mut hdr, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // Data cut short (not descriptors: the kernel cuts those when this process is out of them,
    // and the starts short of pipes fail on their own, see `deliver`).
    let cut = hdr.msg_flags & libc::MSG_TRUNC != 0;
    // Safety: the kernel filled `control` with well-formed headers up to `msg_controllen`; each
    // SCM_RIGHTS payload is an array of descriptors now owned by this process.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for k in 0..len / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(k).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&hdr, c);
        }
    }
    if cut {
        // A message cut short cannot be read whole: the descriptors that came are closed here.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "spawner message larger than the buffer",
        ));
    }
    Ok((n, fds))
}

/// Sends `frame` from `sent` on (counting what goes out in `sent`) until all of it is sent, or,
/// with `until_part`, until some of it is; waits for room when the buffer is full.
pub(crate) async fn write(
    stream: &UnixStream,
    frame: &[u8],
    sent: &mut usize,
    until_part: bool,
) -> io::Result<()> {
    let mut room: Option<AsyncFd<UnixStream>> = None;
    while *sent < frame.len() {
        let rest = &frame[*sent..];
        // Safety: sends from a live buffer of that length.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        let e = match n {
            1.. => {
                *sent += n as usize;
                if until_part && *sent < frame.len() {
                    return Ok(());
                }
                continue;
            }
            0 => io::Error::from(io::ErrorKind::WriteZero),
            _ => io::Error::last_os_error(),
        };
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => {
                let room = match &mut room {
                    Some(room) => room,
                    // Registered on a copy of the descriptor, only while it waits: the spawners
                    // outlive any one runtime.
                    None => {
                        tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
                        let copy = stream.try_clone()?;
                        // Safety: the copy is owned by the `AsyncFd`, open and the same
                        // descriptor for as long as it lives.
                        room.insert(unsafe {
                            AsyncFd::register_with_interest(copy, tokio::io::Interest::WRITABLE)?
                        })
                    }
                };
                // Cleared before the next try: room made after it wakes this wait again.
                room.writable().await?.clear_ready();
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_survive_the_trip() {
        let r = Request {
            id: 7,
            program: b"/bin/sh".to_vec(),
            args: vec![b"-c".to_vec(), b"echo \xff".to_vec()],
            env: vec![(b"A".to_vec(), b"\x80b".to_vec())],
            cwd: Some(b"/tmp".to_vec()),
            workdir: Some((b"/tmp/x".to_vec(), true)),
            umask: Some(0o022),
            limits: vec![(7, 64)],
            identity: Some((Some(65534), 65534, vec![65534, 1])),
        };
        let frame = r.encode();
        assert_eq!(
            frame.len() - 4,
            u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize
        );
        assert_eq!(Request::decode(&frame[4..]), Some(r));
        assert_eq!(
            Request::decode(&Request::default().encode()[4..]),
            Some(Request::default())
        );
        for rep in [
            Reply::Started {
                id: 1,
                pid: 42,
                start_time: Some(9),
            },
            Reply::Failed {
                id: 2,
                errno: 13,
                at_exec: true,
                message: "Permission denied".into(),
            },
            Reply::Failed {
                id: 3,
                errno: 2,
                at_exec: false,
                message: "No such file or directory".into(),
            },
            Reply::Exited {
                pid: 42,
                status: 256,
            },
        ] {
            assert_eq!(Reply::decode(&rep.encode()), Some(rep));
        }
        // Several exits in one message come out in order; a torn one refuses the message.
        let exits: Vec<Reply> = (1..=3)
            .map(|pid| Reply::Exited { pid, status: 0 })
            .collect();
        let msg: Vec<u8> = exits.iter().flat_map(Reply::encode).collect();
        assert_eq!(Reply::decode_all(&msg), Some(exits));
        assert_eq!(Reply::decode_all(&msg[..msg.len() - 1]), None);
        // Short or absurd input is refused, not trusted.
        assert_eq!(Request::decode(&frame[4..frame.len() - 1]), None);
        assert_eq!(Request::decode(&[0; 8]), None);
        assert_eq!(Reply::decode(&[9]), None);
    }
}
