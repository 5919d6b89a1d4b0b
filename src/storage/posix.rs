//! The posix storage driver: a directory tree on a local file system.
//!
//! Durability: a new file is fsynced before its rename and its directory after; a new
//! directory is fsynced into its parent. Modes are set explicitly (files 0640, directories
//! 0750) so a permissive umask cannot widen them.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{AtomicWrite, Storage, TEMP_PREFIX};
use crate::error::{Error, Kind, Result};

pub const FILE_MODE: u32 = 0o640;
pub const DIR_MODE: u32 = 0o750;

pub struct PosixStorage {
    root: PathBuf,
}

impl PosixStorage {
    pub fn new(root: impl Into<PathBuf>) -> PosixStorage {
        PosixStorage { root: root.into() }
    }

    /// Maps a storage path to a local one, refusing anything that could leave the root.
    fn resolve(&self, path: &str) -> Result<PathBuf> {
        let rel = Path::new(path);
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            // Commands build storage paths from the stanza name (validated with the config)
            // and from repository contents (labels, manifest entries), so such a path means
            // the repository was altered: a format failure, whether the repository is
            // local or this is the remote server (the kind travels back to the client). Only
            // a broken or hostile protocol client could send one otherwise.
            return Err(Error::new(
                Kind::Format,
                format!("refused storage path '{path}': not a plain relative path"),
            )
            .with_hint(
                "a path read from the repository leaves it: check backup.info and the \
                 manifests for tampering, and restore them from a copy",
            ));
        }
        Ok(self.root.join(rel))
    }

    /// Writing in `dir` creates entries in it or, where it does not exist yet, in its
    /// nearest existing ancestor inside the root: that directory must be ours
    /// ([`check_owner`]). A root that does not exist yet becomes ours when it is created.
    fn check_writer(&self, dir: &Path) -> Result<()> {
        let mut here = dir;
        loop {
            if fs::symlink_metadata(here).is_ok() {
                return check_owner(here, "directory");
            }
            match here.parent() {
                Some(parent) if here != self.root && parent.starts_with(&self.root) => {
                    here = parent
                }
                _ => return Ok(()),
            }
        }
    }
}

impl Storage for PosixStorage {
    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let path = self.resolve(dir)?;
        let entries = match fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", &path, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &path, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(TEMP_PREFIX) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn temp_files(&self, dir: &str) -> Result<Vec<String>> {
        let root = self.resolve(dir)?;
        let mut found = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(rel) = pending.pop() {
            let here = root.join(&rel);
            let entries = match fs::read_dir(&here) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("list", &here, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("list", &here, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let child = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                let is_dir = entry
                    .file_type()
                    .map_err(|e| Error::io("inspect", &entry.path(), e))?
                    .is_dir();
                if is_dir {
                    pending.push(child);
                } else if name.starts_with(TEMP_PREFIX) {
                    found.push(child);
                }
            }
        }
        found.sort();
        Ok(found)
    }

    fn open_read(&self, path: &str) -> Result<Option<Box<dyn Read + Send + '_>>> {
        let path = self.resolve(path)?;
        match File::open(&path) {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("open", &path, e)),
        }
    }

    fn open_read_range(
        &self,
        path: &str,
        start: u64,
        end: u64,
    ) -> Result<Option<Box<dyn Read + Send + '_>>> {
        use std::io::{Seek, SeekFrom};
        let path = self.resolve(path)?;
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        // Seeking past the end is allowed; reading there gives no bytes, which the caller
        // counts.
        file.seek(SeekFrom::Start(start))
            .map_err(|e| Error::io("seek in", &path, e))?;
        Ok(Some(Box::new(file.take(end.saturating_sub(start)))))
    }

    fn open_write(&self, dir: &str) -> Result<Box<dyn AtomicWrite + '_>> {
        let dir = self.resolve(dir)?;
        self.check_writer(&dir)?;
        create_dir_durable(&dir)?;
        Ok(Box::new(PosixWriter::create(dir)?))
    }

    fn create_path(&self, path: &str) -> Result<()> {
        let dir = self.resolve(path)?;
        self.check_writer(&dir)?;
        // A new directory is synced into its parent as it is made; one that already exists
        // may be a killed run's, never synced, so its parent is synced here instead.
        if !dir.is_dir() {
            return create_dir_durable(&dir);
        }
        match dir.parent() {
            Some(parent) if dir != self.root => sync_dir(parent),
            _ => Ok(()),
        }
    }

    fn create_link(&self, target: &str, link: &str) -> Result<()> {
        let local = self.resolve(link)?;
        let Some(dir) = local.parent().filter(|_| local != self.root) else {
            return Err(Error::new(
                Kind::Format,
                format!("refused link '{link}': the storage root cannot be a link"),
            ));
        };
        check_link_target(&self.root, dir, target, link)?;
        self.check_writer(dir)?;
        create_dir_durable(dir)?;
        match fs::symlink_metadata(&local) {
            Ok(m) if m.file_type().is_symlink() => {
                let current =
                    fs::read_link(&local).map_err(|e| Error::io("read link", &local, e))?;
                if current == Path::new(target) {
                    return sync_dir(dir);
                }
                fs::remove_file(&local).map_err(|e| Error::io("remove link", &local, e))?;
            }
            _ => {}
        }
        std::os::unix::fs::symlink(target, &local)
            .map_err(|e| Error::io("create link", &local, e))?;
        sync_dir(dir)
    }

    fn remove(&self, path: &str) -> Result<()> {
        let path = self.resolve(path)?;
        self.check_writer(path.parent().unwrap_or(&path))?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &path, e)),
        }
    }

    fn remove_tree(&self, path: &str) -> Result<()> {
        let path = self.resolve(path)?;
        self.check_writer(&path)?;
        match fs::remove_dir_all(&path) {
            Ok(()) => path.parent().map_or(Ok(()), sync_dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove directory", &path, e)),
        }
    }

    fn describe(&self, path: &str) -> String {
        self.root.join(path).display().to_string()
    }

    fn info(&self, path: &str) -> Result<Option<super::EntryInfo>> {
        let local = self.resolve(path)?;
        let name = path.rsplit('/').next().unwrap_or(path).to_string();
        match fs::symlink_metadata(&local) {
            Ok(meta) => Ok(Some(entry_info(name, &local, &meta))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("inspect", &local, e)),
        }
    }

    fn sync_path(&self, dir: &str) -> Result<()> {
        sync_dir(&self.resolve(dir)?)
    }

    fn list_info(&self, dir: &str) -> Result<Vec<super::EntryInfo>> {
        let path = self.resolve(dir)?;
        let entries = match fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", &path, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &path, e))?;
            let local = entry.path();
            match fs::symlink_metadata(&local) {
                Ok(meta) => out.push(entry_info(
                    entry.file_name().to_string_lossy().into_owned(),
                    &local,
                    &meta,
                )),
                // Removed since the listing (a temp file committed meanwhile): not there.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("inspect", &local, e)),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

fn entry_info(name: String, local: &Path, meta: &fs::Metadata) -> super::EntryInfo {
    use std::os::unix::fs::MetadataExt;
    let t = meta.file_type();
    let kind = if t.is_file() {
        super::EntryKind::File
    } else if t.is_dir() {
        super::EntryKind::Path
    } else if t.is_symlink() {
        super::EntryKind::Link
    } else {
        super::EntryKind::Special
    };
    super::EntryInfo {
        name,
        kind,
        size: if kind == super::EntryKind::File {
            meta.len()
        } else {
            0
        },
        mtime: meta.mtime(),
        link_destination: (kind == super::EntryKind::Link)
            .then(|| fs::read_link(local).ok())
            .flatten()
            .map(|d| d.to_string_lossy().into_owned()),
    }
}

/// Refuses a link whose target, taken from the link's directory `dir`, leaves the storage
/// `root`: the link arrives from a protocol client like any path, and writes or removals
/// through it would reach outside the root. The check runs on real paths (symlinks in the
/// root, the root's own path, resolved), and `..` may only lead the target, so no `..`
/// comes after a component that could itself be a symlink: lexical and real resolution then
/// agree, and a chain of links, each checked when made, cannot climb out either.
fn check_link_target(root: &Path, dir: &Path, target: &str, link: &str) -> Result<()> {
    let refused = |why: &str| {
        Err(Error::new(
            Kind::Format,
            format!("refused link '{link}' to '{target}': {why}"),
        )
        .with_hint(
            "a link in a repository points into its own backup only: check the manifest for \
             tampering",
        ))
    };
    let real = |p: &Path| fs::canonicalize(p).map_err(|e| Error::io("resolve path", p, e));
    let real_root = real(root)?;
    // The nearest existing ancestor of the link's directory, resolved; the rest of it does
    // not exist yet, so holds no symlink.
    let mut existing = dir;
    let mut missing = Vec::new();
    while fs::symlink_metadata(existing).is_err() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                missing.push(name);
                existing = parent;
            }
            _ => return refused("its directory is not inside the storage"),
        }
    }
    let mut here = real(existing)?;
    here.extend(missing.iter().rev());
    if target.is_empty() || target.starts_with('/') {
        return refused("the target must be a relative path");
    }
    let mut named = false;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." if named => return refused("'..' may only lead the target"),
            ".." => {
                here.pop();
            }
            name => {
                named = true;
                here.push(name);
            }
        }
    }
    if here.starts_with(&real_root) {
        Ok(())
    } else {
        refused("the target leaves the storage")
    }
}

/// Creates `dir` and any missing parents, each with [`DIR_MODE`], fsyncing each new entry
/// into its parent so the directory survives a power loss together with the file in it.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
                .map_err(|e| Error::io("set mode of", dir, e))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
            Ok(())
        }
        // Another process made it first: fine.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(Error::io("create directory", dir, e)),
    }
}

/// Refuses to write into `path` when it exists and belongs to another user than the one
/// pg_backrest runs as. A file root writes into postgres's repository, lock or log directory
/// is root's, 0640: every later run as postgres then fails on it. Read-only commands never
/// call this, so they may run as any user.
pub fn check_owner(path: &Path, what: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        // Not there (or not reachable): nobody's yet; the write that follows creates it as
        // ours or reports why it cannot.
        return Ok(());
    };
    let me = nix::unistd::geteuid().as_raw();
    // A sticky world-writable directory (/tmp) is shared by design: what we create there is
    // ours, and no other user can remove it.
    let shared = meta.is_dir() && meta.mode() & 0o1002 == 0o1002;
    if meta.uid() == me || shared {
        return Ok(());
    }
    let owner = user_name(meta.uid());
    Err(Error::new(
        Kind::FileOwner,
        format!(
            "refusing to write into {what} '{}': it belongs to {}, and pg_backrest runs as {}",
            path.display(),
            describe_user(meta.uid()),
            describe_user(me)
        ),
    )
    .with_hint(format!(
        "run pg_backrest as {owner}, the owner (for example 'sudo -u {owner} pg_backrest ...'); \
         files written by another user would lock {owner} out"
    )))
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |u| u.name)
}

fn describe_user(uid: u32) -> String {
    format!("user '{}' (uid {uid})", user_name(uid))
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", dir, e))
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// An atomic write into a local directory; see the module docs of [`crate::storage`].
pub struct PosixWriter {
    dir: PathBuf,
    temp: PathBuf,
    file: Option<File>,
    /// How far the written bytes have been handed to the kernel for writeback.
    hinted: HintMark,
}

/// Every this many bytes a writer asks the kernel to start writing them out. Without it a
/// large file's pages all stay dirty until the fsync at commit, and the disk idles while we
/// decompress and then the CPU idles while the disk catches up; PostgreSQL's own bulk
/// writers (checkpointer, initdb's sync) start writeback early for the same reason.
const WRITEBACK_EVERY: u64 = 8 * 1024 * 1024;

impl PosixWriter {
    pub fn create(dir: PathBuf) -> Result<PosixWriter> {
        PosixWriter::create_with_mode(dir, FILE_MODE)
    }

    /// A writer whose file gets `mode` (restore gives data files the mode they had).
    pub fn create_with_mode(dir: PathBuf, mode: u32) -> Result<PosixWriter> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!("{TEMP_PREFIX}{}.{n}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)
            .map_err(|e| Error::io("create", &temp, e))?;
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| Error::io("set mode of", &temp, e))?;
        Ok(PosixWriter {
            dir,
            temp,
            file: Some(file),
            hinted: HintMark::default(),
        })
    }
}

impl PosixWriter {
    /// Sets the temp file's length (a sparse file of zeros when extending an empty one).
    pub fn set_len(&mut self, len: u64) -> Result<()> {
        match self.file.as_mut() {
            Some(f) => f
                .set_len(len)
                .map_err(|e| Error::io("extend", &self.temp, e)),
            None => Err(Error::internal("set_len after commit")),
        }
    }

    /// Gives the empty temp file its length `len` with its disk space reserved
    /// (`fallocate`), for a file that several workers then fill at different offsets.
    ///
    /// Why: a sparse file written in 64 MiB runs by two workers at once got its extents in
    /// the order the runs were written back, a 1 GiB segment in 117 extents instead of 9
    /// (ext4), and every later sequential read of it (a delta restore, PostgreSQL's own
    /// scans) was slower for it: a cold delta of the scale-100 copy took 1.4–2.2 s instead
    /// of 1.0–1.3 s. Reserved first, the file is laid out as a file written in order. No
    /// space left is then found before any byte is written. Where the file system cannot
    /// reserve (EOPNOTSUPP), the file is only extended, as before.
    pub fn allocate(&mut self, len: u64) -> Result<()> {
        use nix::errno::Errno;
        use nix::fcntl::{fallocate, FallocateFlags};
        let Some(f) = self.file.as_ref() else {
            return Err(Error::internal("allocate after commit"));
        };
        // fallocate refuses a length of 0; a length past i64 fails as EFBIG would.
        if len == 0 {
            return self.set_len(0);
        }
        let len_signed = i64::try_from(len).unwrap_or(i64::MAX);
        match fallocate(f, FallocateFlags::empty(), 0, len_signed) {
            Ok(()) => Ok(()),
            Err(Errno::EOPNOTSUPP | Errno::ENOSYS) => self.set_len(len),
            Err(e) => Err(Error::io("allocate", &self.temp, io::Error::from(e))),
        }
    }
}

impl Write for PosixWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.file.as_mut() {
            Some(f) => {
                let n = f.write(buf)?;
                self.hinted.advance(f, n, false);
                Ok(n)
            }
            None => Err(io::Error::other("write after commit")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Starts (does not wait for) writeback of a written range. `POSIX_FADV_DONTNEED` does that
/// on Linux for dirty pages and drops only pages already clean, so it is the portable,
/// safe-to-call form of `sync_file_range(SYNC_FILE_RANGE_WRITE)`. Purely a hint: the fsync
/// at commit is what makes the data durable and reports any error.
fn start_writeback(file: &File, offset: u64, len: u64) {
    drop_cached(file, offset, len);
}

/// `POSIX_FADV_WILLNEED` on a range of `file`: the kernel starts reading it into the page
/// cache now, without waiting. Purely a hint.
pub fn will_need(file: &File, offset: u64, len: u64) {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    let _ = posix_fadvise(
        file,
        offset as i64,
        len as i64,
        PosixFadviseAdvice::POSIX_FADV_WILLNEED,
    );
}

/// `POSIX_FADV_DONTNEED` on a range of `file`: drops its clean pages from the page cache and
/// starts writeback of its dirty ones. Purely a hint; errors are of no consequence.
pub fn drop_cached(file: &File, offset: u64, len: u64) {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    let _ = posix_fadvise(
        file,
        offset as i64,
        len as i64,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

/// How far behind the write position a writer drops the pages it wrote, which by then have
/// been written back (the hint of [`start_writeback`] started that two hints before) and are
/// clean. A large restore or backup then recycles a few dozen MiB of page cache instead of
/// taking a fresh page for every page it writes: on a VM whose balloon hands freed memory back
/// to its host (free page reporting), each fresh page is a host fault charged to us as
/// kernel time. Measured on the scale-100 benchmark cluster (docs/benchmarks.md, "pages
/// recycled behind the write"): a restore right after a copy was removed took 1.4–1.7 s
/// with it and 1.9–2.9 s without (kernel time 0.9–1.2 s against 1.8–3.2 s); cold restores
/// became steady (1.4–1.7 s against 1.5–2.9 s). Files smaller than this are left cached
/// as they were written (a WAL segment PostgreSQL is about to replay).
pub const RECYCLE_BEHIND: u64 = 3 * WRITEBACK_EVERY;

/// Bytes of a file passed through so far, and how far the kernel has been given
/// [`start_writeback`]'s hint about them: every [`WRITEBACK_EVERY`] bytes, and for the rest
/// at the end; writers also drop the pages [`RECYCLE_BEHIND`] behind.
#[derive(Default)]
struct HintMark {
    done: u64,
    hinted_to: u64,
    recycled_to: u64,
}

impl HintMark {
    fn advance(&mut self, file: &File, n: usize, at_end: bool) {
        self.done += n as u64;
        let pending = self.done - self.hinted_to;
        if pending >= WRITEBACK_EVERY || (at_end && pending > 0) {
            start_writeback(file, self.hinted_to, pending);
            self.hinted_to = self.done;
            let clean_to = self.hinted_to.saturating_sub(RECYCLE_BEHIND);
            if clean_to > self.recycled_to {
                drop_cached(file, self.recycled_to, clean_to - self.recycled_to);
                self.recycled_to = clean_to;
            }
        }
    }
}

/// A reader of a local file read once and not needed in memory afterwards: it lets go of
/// the pages it has read every [`WRITEBACK_EVERY`] bytes (`POSIX_FADV_DONTNEED` drops clean
/// pages from the page cache).
///
/// Used by a delta restore to hash the files of a stopped data directory. Without it, hashing
/// fills the page cache with the whole cluster, evicting what the host had cached. Every page
/// read is also a freshly allocated one: on a VM whose balloon hands freed memory back to the
/// host (free page reporting), those allocations fault on the host, and the same delta restore
/// of the scale-100 benchmark cluster took 1.8–2.0 s, with 1.3–1.6 s of kernel time, instead of
/// 1.3–1.5 s (0.4 s) with the pages dropped behind. Never for a live cluster's files: those
/// pages are PostgreSQL's cache (backup reads them with [`super::scan::ScanReader`], which
/// leaves the cache as it was; for this stopped directory, readahead and dropping behind
/// finished the check sooner than its synchronous direct reads).
pub struct DropBehindReader<'a> {
    file: &'a File,
    /// The pages read are clean, so the writers' writeback hint drops them.
    dropped: HintMark,
}

impl<'a> DropBehindReader<'a> {
    pub fn new(file: &'a File) -> DropBehindReader<'a> {
        DropBehindReader {
            file,
            dropped: HintMark::default(),
        }
    }
}

impl Read for DropBehindReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.dropped.done += n as u64;
        let pending = self.dropped.done - self.dropped.hinted_to;
        if pending >= WRITEBACK_EVERY || (n == 0 && pending > 0) {
            drop_cached(self.file, self.dropped.hinted_to, pending);
            self.dropped.hinted_to = self.dropped.done;
        }
        Ok(n)
    }
}

impl PosixWriter {
    /// The open temp file, so that attributes (mtime, owner) are set before the name appears.
    pub fn temp_file(&self) -> Result<(&File, &Path)> {
        match self.file.as_ref() {
            Some(f) => Ok((f, &self.temp)),
            None => Err(Error::internal("temp file used after commit")),
        }
    }

    /// As [`AtomicWrite::commit`], but the directory is not fsynced: a caller writing many
    /// files into a few directories (restore) syncs each directory once, after its last
    /// file, instead of once per file. The rename is as atomic as ever; what the caller owes
    /// is that sync before it reports the files as written.
    pub fn commit_leaving_dir_unsynced(mut self, name: &str) -> Result<()> {
        self.sync_and_rename(name)
    }

    fn sync_and_rename(&mut self, name: &str) -> Result<()> {
        let Some(file) = self.file.take() else {
            return Err(Error::internal("commit called twice"));
        };
        file.sync_all()
            .map_err(|e| Error::io("sync", &self.temp, e))?;
        drop(file);
        let target = self.dir.join(name);
        fs::rename(&self.temp, &target)
            .map_err(|e| Error::io("rename temp file to", &target, e))?;
        // Renamed: nothing left for Drop to remove.
        self.temp = PathBuf::new();
        Ok(())
    }
}

impl AtomicWrite for PosixWriter {
    fn commit(mut self: Box<Self>, name: &str) -> Result<()> {
        self.sync_and_rename(name)?;
        sync_dir(&self.dir)
    }

    fn commit_unsynced(mut self: Box<Self>, name: &str) -> Result<()> {
        self.sync_and_rename(name)
    }
}

impl Drop for PosixWriter {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn write_is_invisible_until_commit_and_has_repository_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let s = PosixStorage::new(tmp.path());
        let mut w = s.open_write("a/b").unwrap();
        w.write_all(b"hello").unwrap();
        assert!(
            s.list("a/b").unwrap().is_empty(),
            "temp files are not listed"
        );
        w.commit("f").unwrap();
        assert_eq!(s.list("a/b").unwrap(), vec!["f"]);
        assert_eq!(fs::read(tmp.path().join("a/b/f")).unwrap(), b"hello");
        assert_eq!(
            fs::metadata(tmp.path().join("a/b/f")).unwrap().mode() & 0o777,
            FILE_MODE
        );
        assert_eq!(
            fs::metadata(tmp.path().join("a")).unwrap().mode() & 0o777,
            DIR_MODE
        );
        assert_eq!(
            fs::metadata(tmp.path().join("a/b")).unwrap().mode() & 0o777,
            DIR_MODE
        );
    }

    #[test]
    fn a_file_written_past_several_writeback_hints_reads_back_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let s = PosixStorage::new(tmp.path());
        let data: Vec<u8> = (0..(2 * WRITEBACK_EVERY as usize + 12_345))
            .map(|i| (i % 253) as u8)
            .collect();
        let mut w = s.open_write("d").unwrap();
        for chunk in data.chunks(100_000) {
            w.write_all(chunk).unwrap();
        }
        w.commit("f").unwrap();
        assert!(fs::read(tmp.path().join("d/f")).unwrap() == data);
    }

    /// The pages it lets go of are only a cache: every byte still comes through, in order,
    /// across the drop points and at the end of the file.
    /// A ranged read gives exactly the bytes asked for, fewer where the file ends, none past
    /// its end; the trait's read-and-discard default, for drivers that cannot seek, agrees.
    #[test]
    fn ranged_reads_give_the_range_and_stop_at_the_end() {
        struct Unseekable<'a>(&'a PosixStorage);
        impl Storage for Unseekable<'_> {
            fn list(&self, d: &str) -> Result<Vec<String>> {
                self.0.list(d)
            }
            fn temp_files(&self, d: &str) -> Result<Vec<String>> {
                self.0.temp_files(d)
            }
            fn open_read(&self, p: &str) -> Result<Option<Box<dyn Read + Send + '_>>> {
                self.0.open_read(p)
            }
            fn open_write(&self, d: &str) -> Result<Box<dyn AtomicWrite + '_>> {
                self.0.open_write(d)
            }
            fn create_path(&self, p: &str) -> Result<()> {
                self.0.create_path(p)
            }
            fn create_link(&self, t: &str, l: &str) -> Result<()> {
                self.0.create_link(t, l)
            }
            fn remove(&self, p: &str) -> Result<()> {
                self.0.remove(p)
            }
            fn remove_tree(&self, p: &str) -> Result<()> {
                self.0.remove_tree(p)
            }
            fn describe(&self, p: &str) -> String {
                self.0.describe(p)
            }
            fn info(&self, p: &str) -> Result<Option<crate::storage::EntryInfo>> {
                self.0.info(p)
            }
            fn list_info(&self, d: &str) -> Result<Vec<crate::storage::EntryInfo>> {
                self.0.list_info(d)
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        let s = PosixStorage::new(tmp.path());
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(tmp.path().join("f"), &data).unwrap();
        let range = |st: &dyn Storage, a: u64, b: u64| {
            let mut out = Vec::new();
            st.open_read_range("f", a, b)
                .unwrap()
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            out
        };
        for st in [&s as &dyn Storage, &Unseekable(&s)] {
            assert_eq!(range(st, 10, 20), data[10..20]);
            assert_eq!(range(st, 0, 100_000), data);
            assert_eq!(range(st, 99_990, 200_000), data[99_990..], "cut at the end");
            assert!(range(st, 150_000, 160_000).is_empty(), "past the end");
            assert!(st.open_read_range("missing", 0, 1).unwrap().is_none());
        }
    }

    #[test]
    fn a_large_write_hands_its_pages_back_behind_it_and_stores_every_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(5 * WRITEBACK_EVERY as usize + 4321))
            .map(|i| (i % 253) as u8)
            .collect();
        let mut writer = PosixWriter::create(tmp.path().to_path_buf()).unwrap();
        for chunk in data.chunks(1 << 20) {
            writer.write_all(chunk).unwrap();
        }
        let hinted = writer.hinted.hinted_to;
        assert_eq!(hinted, 5 * WRITEBACK_EVERY, "writeback started every 8 MiB");
        assert_eq!(
            writer.hinted.recycled_to,
            hinted - RECYCLE_BEHIND,
            "pages dropped up to RECYCLE_BEHIND behind the last hint"
        );
        Box::new(writer).commit("f").unwrap();
        assert!(fs::read(tmp.path().join("f")).unwrap() == data);
    }

    /// An allocated temp file has its length with the space reserved (blocks counted, not
    /// a sparse file), reads as zeros where nothing was written, and keeps what workers
    /// wrote at their offsets in any order. (The test directory's file system must support
    /// `fallocate`, as ext4, xfs and tmpfs do.)
    #[test]
    fn an_allocated_file_has_its_space_reserved_and_takes_writes_at_any_offset() {
        let tmp = tempfile::tempdir().unwrap();
        let len = 3 * WRITEBACK_EVERY + 4096;
        let mut writer = PosixWriter::create(tmp.path().to_path_buf()).unwrap();
        writer.allocate(len).unwrap();
        let (file, temp) = writer.temp_file().unwrap();
        let meta = fs::metadata(temp).unwrap();
        assert_eq!(meta.len(), len);
        assert!(
            meta.blocks() * 512 >= len,
            "{} blocks reserved",
            meta.blocks()
        );
        {
            use std::os::unix::fs::FileExt;
            file.write_all_at(b"second", 2 * WRITEBACK_EVERY).unwrap();
            file.write_all_at(b"first", 10).unwrap();
        }
        Box::new(writer).commit("f").unwrap();
        let back = fs::read(tmp.path().join("f")).unwrap();
        assert_eq!(back.len() as u64, len);
        assert_eq!(&back[10..15], b"first");
        let at = 2 * WRITEBACK_EVERY as usize;
        assert_eq!(&back[at..at + 6], b"second");
        assert!(back[..10].iter().chain(&back[at + 6..]).all(|&b| b == 0));

        let mut empty = PosixWriter::create(tmp.path().to_path_buf()).unwrap();
        empty.allocate(0).unwrap();
        Box::new(empty).commit("empty").unwrap();
        assert_eq!(fs::metadata(tmp.path().join("empty")).unwrap().len(), 0);
    }

    /// A file larger than the file system has room for fails at `allocate`, before any byte
    /// is written: the error names the temp file and the cause, and the temp file goes with
    /// the writer. On a 1 MiB tmpfs (mounting it takes root, as the test suite runs).
    #[test]
    fn allocating_more_than_the_file_system_holds_fails_before_any_write() {
        let tmp = tempfile::tempdir().unwrap();
        let small = tmp.path().join("small");
        fs::create_dir(&small).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&small)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount a tmpfs (needs root)");
        let result = (|| {
            let mut writer = PosixWriter::create(small.clone())?;
            writer.allocate(8 << 20)
        })();
        let left: Vec<_> = fs::read_dir(&small).unwrap().collect();
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&small)
            .status();
        let e = result.expect_err("8 MiB allocated on a 1 MiB file system");
        assert!(
            e.message.contains("unable to allocate")
                && e.message.contains(small.to_str().unwrap())
                && e.message.contains("No space left"),
            "{}",
            e.message
        );
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[test]
    fn a_drop_behind_reader_reads_the_whole_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        let data: Vec<u8> = (0..(2 * WRITEBACK_EVERY as usize + 12_345))
            .map(|i| (i % 251) as u8)
            .collect();
        fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let mut reader = DropBehindReader::new(&file);
        let mut back = Vec::new();
        let mut chunk = vec![0u8; 512 * 1024];
        loop {
            let n = reader.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            back.extend_from_slice(&chunk[..n]);
        }
        assert!(back == data, "read {} of {} bytes", back.len(), data.len());
        assert_eq!(
            reader.dropped.hinted_to,
            data.len() as u64,
            "all of it let go"
        );
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let s = PosixStorage::new(tmp.path());
        let mut w = s.open_write("d").unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(tmp.path().join("d")).unwrap().count(), 0);
    }

    /// Listings never show a temp file; `temp_files` finds them at any depth, and only them.
    #[test]
    fn temp_files_are_found_at_any_depth() {
        let tmp = tempfile::tempdir().unwrap();
        let s = PosixStorage::new(tmp.path());
        write_small_at(&s, "b/x/kept", b"done");
        fs::write(tmp.path().join("b/x/.pgbr-tmp.1.0"), b"half").unwrap();
        fs::create_dir_all(tmp.path().join("b/y/z")).unwrap();
        fs::write(tmp.path().join("b/y/z/.pgbr-tmp.2.5"), b"half").unwrap();
        fs::write(tmp.path().join("b/.pgbr-tmp.3.1"), b"half").unwrap();
        assert_eq!(s.list("b/x").unwrap(), vec!["kept"]);
        assert_eq!(
            s.temp_files("b").unwrap(),
            vec![".pgbr-tmp.3.1", "x/.pgbr-tmp.1.0", "y/z/.pgbr-tmp.2.5"]
        );
        assert!(s.temp_files("missing").unwrap().is_empty());
    }

    fn write_small_at(s: &PosixStorage, path: &str, data: &[u8]) {
        crate::storage::write_small(s, path, data).unwrap();
    }

    /// Paths come with the repository's directory mode and may exist already (a resumed
    /// backup creates them again).
    #[test]
    fn create_path_makes_every_level_and_accepts_an_existing_one() {
        let tmp = tempfile::tempdir().unwrap();
        let s = PosixStorage::new(tmp.path());
        s.create_path("b/L/pg_data/pg_notify").unwrap();
        s.create_path("b/L/pg_data/pg_notify").unwrap();
        for d in ["b", "b/L", "b/L/pg_data", "b/L/pg_data/pg_notify"] {
            let m = fs::metadata(tmp.path().join(d)).unwrap();
            assert!(m.is_dir() && m.mode() & 0o777 == DIR_MODE, "{d}");
        }
        fs::write(tmp.path().join("b/f"), b"x").unwrap();
        let e = s.create_path("b/f/sub").unwrap_err();
        assert_eq!(e.kind, Kind::PathCreate, "{e:?}");
        assert!(s.create_path("b/../../x").is_err());
    }

    /// A tablespace link as pgBackRest makes it: relative, inside the backup. Made again it
    /// stays; pointing elsewhere it is replaced; a link out of the root is refused, and a
    /// file in its place is not removed.
    #[test]
    fn create_link_makes_replaces_and_refuses_escapes() {
        let tmp = tempfile::tempdir().unwrap();
        let s = PosixStorage::new(tmp.path());
        s.create_path("L/pg_tblspc/16385").unwrap();
        let link = "L/pg_data/pg_tblspc/16385";
        s.create_link("../../pg_tblspc/16385", link).unwrap();
        s.create_link("../../pg_tblspc/16385", link).unwrap();
        let local = tmp.path().join(link);
        assert_eq!(
            fs::read_link(&local).unwrap(),
            Path::new("../../pg_tblspc/16385")
        );
        assert!(local.is_dir(), "the link resolves inside the backup");
        let info = s.info(link).unwrap().unwrap();
        assert_eq!(info.kind, crate::storage::EntryKind::Link);
        s.create_link("../../pg_tblspc/16386", link).unwrap();
        assert_eq!(
            fs::read_link(&local).unwrap(),
            Path::new("../../pg_tblspc/16386")
        );
        for bad in [
            "../../../../x",
            "/etc",
            "",
            "../../../..",
            "../x/../../../..",
        ] {
            let e = s.create_link(bad, link).unwrap_err();
            assert_eq!(e.kind, Kind::Format, "{bad}: {e:?}");
            assert!(e.message.contains("refused link"), "{e:?}");
        }
        // Lexically inside, but through a link to the root one level further up: out.
        s.create_link("../..", "L/up").unwrap_err();
        s.create_link("..", "L/up").unwrap();
        let e = s.create_link("../..", "L/up/x").unwrap_err();
        assert!(e.message.contains("leaves the storage"), "{e:?}");
        s.create_link(".", "L/up/x").unwrap();
        assert!(s.create_link("x", "../l").is_err());
        fs::write(tmp.path().join("L/file"), b"x").unwrap();
        assert!(s.create_link("pg_data", "L/file").is_err());
        assert_eq!(fs::read(tmp.path().join("L/file")).unwrap(), b"x");
    }

    #[test]
    fn paths_cannot_escape_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let s = PosixStorage::new(tmp.path());
        assert!(s.open_read("../etc/passwd").is_err());
        assert!(s.open_read("/etc/passwd").is_err());
        assert!(s.list("a/../../x").is_err());
        assert!(s.open_read("missing").unwrap().is_none());
        assert!(s.list("missing").unwrap().is_empty());
    }
}
