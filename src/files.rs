//! Job files: a content-addressed blob store in `data_dir/files`, keyed by the md5 of the content
//! (the hook protocol's `hash`). Writes stream to a temporary file while hashing, check the size
//! limit and the expected md5, then link into place, so a reader never sees a partial blob.
//! A stored blob is never replaced: MD5 collisions are cheap to make, so different bytes with an
//! md5 already stored are refused ([`FileError::Collision`]) rather than swapped in under every
//! job that refers to that md5; the same bytes again are a duplicate, kept once.
//! Which job has which files is stored on the job itself ([`crate::job::FileRef`]).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use tokio::io::AsyncWriteExt;

/// Blob store errors.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The content is larger than allowed.
    #[error("file is larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// The content's md5 is not the announced one.
    #[error("content md5 {actual} does not match the announced {expected}")]
    Mismatch {
        /// Announced.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// The hash is not 32 lowercase hex digits.
    #[error("`{0}` is not an md5 hex digest")]
    BadHash(String),
    /// Reading the request body failed.
    #[error("cannot read the upload: {0}")]
    Body(String),
    /// Different content with this md5 is already stored (an MD5 collision): nothing is stored,
    /// the stored content stays.
    #[error(
        "other content with md5 {0} is already stored (an md5 collision): refused, nothing stored"
    )]
    Collision(String),
    /// Disk trouble.
    #[error("file store I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// What was stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// md5 hex.
    pub hash: String,
    /// Bytes.
    pub size: u64,
}

/// The content-addressed store.
pub struct BlobStore {
    root: PathBuf,
}

/// Checks an md5 hex digest (lowercase, 32 characters).
pub fn valid_hash(h: &str) -> bool {
    h.len() == 32 && is_lower_hex(h)
}

/// Only the digits `0-9a-f` (the content store's names and its shards' are made of them).
pub fn is_lower_hex(h: &str) -> bool {
    h.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl BlobStore {
    /// A store under `root` (created when needed).
    pub fn new(root: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(Self { root })
    }

    /// Where a blob lives.
    pub fn path(&self, hash: &str) -> Result<PathBuf, FileError> {
        if !valid_hash(hash) {
            return Err(FileError::BadHash(hash.to_string()));
        }
        Ok(self.root.join(&hash[..2]).join(hash))
    }

    /// Whether a blob exists; touches it so a concurrent GC spares it.
    pub async fn exists(&self, hash: &str) -> bool {
        match self.path(hash) {
            Ok(p) => {
                let ok = tokio::fs::metadata(&p).await.is_ok();
                if ok {
                    let _ = touch(&p);
                }
                ok
            }
            Err(_) => false,
        }
    }

    /// md5 of `"WEBDA"` + the stored content: the upload challenge for that content.
    pub async fn challenge(&self, hash: &str) -> Result<String, FileError> {
        let p = self.path(hash)?;
        tokio::task::spawn_blocking(move || -> Result<String, FileError> {
            use std::io::Read;
            let mut f = std::fs::File::open(p)?;
            let mut h = Md5::new();
            h.update(b"WEBDA");
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Ok(hex::encode(h.finalize()))
        })
        .await
        .map_err(|e| FileError::Body(e.to_string()))?
    }

    /// Streams `body` into the store. Checks `limit` as bytes arrive and, when given, that the
    /// md5 is `expected`. Nothing is kept on failure. Content already stored (the same bytes) is
    /// kept once and its age refreshed, as a new write's (see [`Self::gc`]); different bytes with
    /// a stored md5 are refused ([`FileError::Collision`]) and the stored blob stays as it was.
    pub async fn put<S, E>(
        &self,
        mut body: S,
        limit: u64,
        expected: Option<&str>,
    ) -> Result<Stored, FileError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if let Some(e) = expected {
            if !valid_hash(e) {
                return Err(FileError::BadHash(e.to_string()));
            }
        }
        let tmp = self
            .root
            .join("tmp")
            .join(uuid::Uuid::now_v7().simple().to_string());
        let result = async {
            let mut f = tokio::fs::File::create(&tmp).await?;
            let mut h = Md5::new();
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| FileError::Body(e.to_string()))?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(FileError::TooLarge(limit));
                }
                h.update(&chunk);
                f.write_all(&chunk).await?;
            }
            // `flush` reports a failed last write (tokio keeps it; `sync_all` does not say):
            // a short file must never be stored under the md5 of the whole.
            f.flush().await?;
            f.sync_all().await?;
            if f.metadata().await?.len() != size {
                return Err(FileError::Io(std::io::Error::other(
                    "the upload was not written whole",
                )));
            }
            let hash = hex::encode(h.finalize());
            if let Some(e) = expected {
                if e != hash {
                    return Err(FileError::Mismatch {
                        expected: e.to_string(),
                        actual: hash,
                    });
                }
            }
            let dest = self.path(&hash)?;
            if let Some(dir) = dest.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            let (from, at) = (tmp.clone(), hash.clone());
            // The temporary name goes in the blocking task too: it runs to its end even when
            // the request is dropped while it compares.
            tokio::task::spawn_blocking(move || {
                let placed = place(&from, &dest, &at);
                let _ = std::fs::remove_file(&from);
                placed
            })
            .await
            .map_err(|e| FileError::Io(std::io::Error::other(e.to_string())))??;
            Ok(Stored { hash, size })
        }
        .await;
        // Linked into place, a duplicate or a failure: the temporary name goes in every case.
        let _ = tokio::fs::remove_file(&tmp).await;
        result
    }

    /// Deletes blobs not in `referenced` whose last touch is older than `grace`, and files of
    /// `tmp/` not written to for as long (an upload cut by a crash: one in progress is written
    /// to, one stalled past `api.body_timeout` is removed by its request); returns how many.
    pub fn gc(
        &self,
        referenced: &dyn Fn(&str) -> bool,
        grace: std::time::Duration,
    ) -> std::io::Result<u64> {
        let mut n = 0;
        let now = std::time::SystemTime::now();
        for dir in std::fs::read_dir(&self.root)? {
            let dir = dir?;
            if !dir.file_type()?.is_dir() {
                continue;
            }
            let tmp = dir.file_name() == "tmp";
            for f in std::fs::read_dir(dir.path())? {
                let f = f?;
                let name = f.file_name().to_string_lossy().to_string();
                let old = f
                    .metadata()
                    .and_then(|m| m.modified())
                    .map(|t| now.duration_since(t).unwrap_or_default() > grace)
                    .unwrap_or(false);
                let unused = tmp || (valid_hash(&name) && !referenced(&name));
                if old && unused && f.file_type()?.is_file() {
                    std::fs::remove_file(f.path())?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

/// Tries of [`place`] when the stored blob vanishes (a GC) between its steps.
const PLACE_TRIES: usize = 3;

/// Puts the complete file `tmp` at `dest` (its md5 `hash`) if no blob is there, atomically
/// (`link` fails when the name exists: never a replacement). When one is: the same bytes are a
/// duplicate (the blob's age is refreshed, as a new write would do), different bytes are an md5
/// collision, refused. `tmp` stays for the caller to remove.
fn place(tmp: &Path, dest: &Path, hash: &str) -> Result<(), FileError> {
    for _ in 0..PLACE_TRIES {
        match link_new(tmp, dest) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        let same = match same_content(tmp, dest) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            other => other?,
        };
        if !same {
            // A stored blob whose bytes do not have its md5 (cut short by an earlier fault) is
            // replaced by the whole upload; one that does is another content: a collision.
            match md5_of(dest) {
                Ok(stored) if stored == hash => return Err(FileError::Collision(hash.to_string())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
                Ok(_) => {
                    tracing::warn!(
                        hash,
                        "a stored file did not have its md5: replaced by an upload of it"
                    );
                    std::fs::rename(tmp, dest)?;
                    return Ok(());
                }
            }
        }
        match touch(dest) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            // Only its age for the collector: a read-only blob is still a stored one.
            Err(e) => tracing::warn!(hash, error = %e, "cannot refresh a stored file's age"),
            Ok(()) => {}
        }
        return Ok(());
    }
    Err(FileError::Io(std::io::Error::other(format!(
        "blob {hash} kept vanishing while being stored"
    ))))
}

/// Creates `dest` as `tmp`'s content only if no file has that name (`AlreadyExists` if one
/// has): a hard link, or where the file system has none (SMB, some FUSE mounts) a rename that
/// replaces nothing (`RENAME_NOREPLACE`).
fn link_new(tmp: &Path, dest: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let e = match std::fs::hard_link(tmp, dest) {
        Ok(()) => return Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotFound
            ) =>
        {
            return Err(e)
        }
        Err(e) => e,
    };
    let c =
        |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (from, to) = (c(tmp)?, c(dest)?);
    // Safety: two valid NUL-terminated paths relative to the working directory.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e2 = std::io::Error::last_os_error();
    if e2.kind() == std::io::ErrorKind::AlreadyExists {
        return Err(e2);
    }
    Err(std::io::Error::other(format!(
        "cannot store a file: the file system makes neither a hard link ({e}) nor an exclusive rename ({e2})"
    )))
}

/// The md5 of a file's bytes (hex), read in bounded memory.
fn md5_of(p: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = fill(&mut f, &mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// Whether two files hold the same bytes, read side by side in bounded memory.
fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = fill(&mut fa, &mut ba)?;
        if n != fill(&mut fb, &mut bb)? || ba[..n] != bb[..n] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends; how many bytes were read.
fn fill(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn touch(p: &Path) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new().append(true).open(p)?;
    f.set_modified(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(
        parts: Vec<&'static [u8]>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p))))
    }

    #[tokio::test]
    async fn put_checks_hash_and_limit_and_keeps_nothing_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::new(dir.path().to_path_buf()).unwrap();
        // md5("hello world") computed with `printf 'hello world' | md5sum`.
        let good = "5eb63bbbe01eeed093cb22bb8f5acdc3";
        let st = s
            .put(stream(vec![b"hello ", b"world"]), 100, Some(good))
            .await
            .unwrap();
        assert_eq!(
            st,
            Stored {
                hash: good.into(),
                size: 11
            }
        );
        assert!(s.exists(good).await);
        let bad = "00000000000000000000000000000000";
        assert!(matches!(
            s.put(stream(vec![b"other"]), 100, Some(bad)).await,
            Err(FileError::Mismatch { .. })
        ));
        assert!(matches!(
            s.put(stream(vec![b"0123456789", b"x"]), 10, None).await,
            Err(FileError::TooLarge(10))
        ));
        assert!(matches!(
            s.path("../../etc/passwd"),
            Err(FileError::BadHash(_))
        ));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        // md5("WEBDA" + "hello world"), `printf 'WEBDAhello world' | md5sum`.
        let expected = {
            let mut h = Md5::new();
            h.update(b"WEBDAhello world");
            hex::encode(h.finalize())
        };
        assert_eq!(s.challenge(good).await.unwrap(), expected);
    }

    /// The public MD5 collision pair (Wang and Yu, 2004): 128 bytes each, md5
    /// `79054025255fb1a26e4bc422aef54eb4`.
    const COLLIDING_A: &str = "d131dd02c5e6eec4693d9a0698aff95c2fcab58712467eab4004583eb8fb7f8955ad340609f4b30283e488832571415a085125e8f7cdc99fd91dbdf280373c5bd8823e3156348f5bae6dacd436c919c6dd53e2b487da03fd02396306d248cda0e99f33420f577ee8ce54b67080a80d1ec69821bcb6a8839396f9652b6ff72a70";
    const COLLIDING_B: &str = "d131dd02c5e6eec4693d9a0698aff95c2fcab50712467eab4004583eb8fb7f8955ad340609f4b30283e4888325f1415a085125e8f7cdc99fd91dbd7280373c5bd8823e3156348f5bae6dacd436c919c6dd53e23487da03fd02396306d248cda0e99f33420f577ee8ce54b67080280d1ec69821bcb6a8839396f965ab6ff72a70";

    fn owned(b: Vec<u8>) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(vec![Ok(Bytes::from(b))])
    }

    #[tokio::test]
    async fn an_md5_collision_is_refused_and_the_stored_bytes_stay() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::new(dir.path().to_path_buf()).unwrap();
        let (a, b) = (
            hex::decode(COLLIDING_A).unwrap(),
            hex::decode(COLLIDING_B).unwrap(),
        );
        assert_ne!(a, b);
        let hash = "79054025255fb1a26e4bc422aef54eb4";
        let st = s.put(owned(a.clone()), 1024, None).await.unwrap();
        assert_eq!(st.hash, hash);
        let r = s.put(owned(b.clone()), 1024, None).await;
        assert!(
            matches!(&r, Err(FileError::Collision(h)) if h == hash),
            "{r:?}"
        );
        let r = s.put(owned(b), 1024, Some(hash)).await;
        assert!(matches!(r, Err(FileError::Collision(_))), "{r:?}");
        assert_eq!(std::fs::read(s.path(hash).unwrap()).unwrap(), a);
        // The same bytes again: a duplicate, fine.
        assert_eq!(s.put(owned(a.clone()), 1024, None).await.unwrap(), st);
        assert_eq!(std::fs::read(s.path(hash).unwrap()).unwrap(), a);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "no temporary file is left"
        );
    }

    /// Review: a stored file cut short by an earlier fault (under the md5 of the whole) made
    /// every correct upload of it a "collision": it is replaced by the whole instead.
    #[tokio::test]
    async fn a_stored_file_without_its_md5_is_replaced_by_an_upload_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::new(dir.path().to_path_buf()).unwrap();
        let whole = b"the whole content of a file".to_vec();
        let hash = hex::encode(Md5::digest(&whole));
        let dest = s.path(&hash).unwrap();
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(&dest, &whole[..10]).unwrap();
        let st = s
            .put(owned(whole.clone()), 1024, Some(&hash))
            .await
            .unwrap();
        assert_eq!(st.hash, hash);
        assert_eq!(std::fs::read(&dest).unwrap(), whole);
        assert_eq!(s.put(owned(whole), 1024, None).await.unwrap(), st);
    }

    #[tokio::test]
    async fn a_duplicate_upload_keeps_the_blob_young_for_gc() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::new(dir.path().to_path_buf()).unwrap();
        let h = s.put(stream(vec![b"again"]), 100, None).await.unwrap().hash;
        let age = |s: &BlobStore| {
            let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
            let f = std::fs::OpenOptions::new()
                .append(true)
                .open(s.path(&h).unwrap());
            f.unwrap().set_modified(old).unwrap();
        };
        age(&s);
        s.put(stream(vec![b"again"]), 100, None).await.unwrap();
        let grace = std::time::Duration::from_secs(3600);
        assert_eq!(
            s.gc(&|_| false, grace).unwrap(),
            0,
            "uploaded again just now"
        );
        age(&s);
        assert_eq!(s.gc(&|_| false, grace).unwrap(), 1, "an old blob goes");
    }

    #[tokio::test]
    async fn gc_deletes_only_old_unreferenced_contents() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::new(dir.path().to_path_buf()).unwrap();
        let kept = s.put(stream(vec![b"kept"]), 100, None).await.unwrap().hash;
        let orphan = s
            .put(stream(vec![b"orphan"]), 100, None)
            .await
            .unwrap()
            .hash;
        let used = |h: &str| h == kept;
        // What an upload cut by a crash leaves in tmp/.
        let cut = dir.path().join("tmp").join("upload-cut-by-a-crash");
        std::fs::write(&cut, b"half of it").unwrap();
        // Young contents are spared (an upload may be attaching them right now, or writing).
        assert_eq!(
            s.gc(&used, std::time::Duration::from_secs(3600)).unwrap(),
            0
        );
        assert!(s.exists(&orphan).await);
        assert!(cut.exists());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(s.gc(&used, std::time::Duration::from_millis(5)).unwrap(), 2);
        assert!(!s.exists(&orphan).await);
        assert!(!cut.exists(), "a stale upload is removed");
        assert!(s.exists(&kept).await);
    }
}
