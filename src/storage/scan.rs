//! [`ScanReader`]: reads a file once, front to back, leaving the page cache as it found it.
//!
//! Why: a backup reads the whole cluster once. Read through the page cache, every page of it
//! is put there, evicting the database's working set, and each costs the kernel a page
//! allocation and a copy. That is most of a backup's kernel time: on the 2-core benchmark VM,
//! reading a cold 1 GiB relation segment took 1.0–1.7 s of kernel CPU buffered against 0.1 s
//! with `O_DIRECT` (and 0.2 s when already cached). On a VM that hands freed memory back to
//! its host (free page reporting), the allocations also fault on the host, which is the upper
//! end of that range.
//!
//! How: the file is read in ranges of [`RANGE`] bytes. A range whose pages are all in the page
//! cache (PostgreSQL's hot data, pages it has written and the kernel not yet flushed) is read
//! through it: no I/O, nothing evicted. A range with a page missing is read with `O_DIRECT`,
//! from the disk into an aligned buffer of ours, adding nothing to the cache. Before a direct
//! read the kernel writes back the range's dirty pages, so it returns everything written
//! before it, as a buffered read does; a write racing the read is a torn page either way,
//! which the backup's WAL replay repairs and the page checker reads again before reporting.
//!
//! Which ranges are cached is asked once, when the reader is made, with `mincore` on a
//! mapping of the file that is never touched (so a file truncated meanwhile cannot fault) and
//! unmapped at once. Asking again before each range would be misled by the kernel's own
//! readahead: a buffered read of a cached range whose pages carry readahead marks reads the
//! next ranges into the cache, those then look cached and are read buffered in turn, and the
//! whole file ends up in the cache after all (`POSIX_FADV_RANDOM` does not stop that
//! readahead). With the answer taken up front, that readahead reaches at most one window past
//! each cached stretch, and those pages are then read direct. Where `O_DIRECT` is refused
//! (tmpfs on older kernels, some network and FUSE file systems) or the file cannot be mapped,
//! it is read through the cache as before: this only changes how bytes arrive, never which.
//!
//! This and `pipeline/gzip.rs` are the crate's `unsafe` code: mapping a file and asking the
//! kernel about it have no safe interface in std or nix.

use std::fs::File;
use std::io::{self, Read};
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// Bytes read per system call, and the unit of the cached-or-not decision. Large enough for
/// a direct read to run at the disk's streaming rate (1 MiB reads took 0.7–1.0 s per GiB on
/// the benchmark VM, no slower than 8 MiB reads), small enough to keep memory flat.
pub const RANGE: usize = 1 << 20;

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as usize)
}

/// How the reader currently reads: through the cache, or around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direct {
    /// What is cached is unknown, the file system refused `O_DIRECT`, or a direct read
    /// failed: always buffered.
    Unavailable,
    Off,
    On,
}

/// See the module docs. Direct reads need an aligned buffer and the caller's is not, so each
/// byte is copied out of the reader's own window once, as the kernel copied it out of the page
/// cache before. Reads positionally (`pread`) and never moves the file's offset; the
/// descriptor's `O_DIRECT` flag is switched back off at the end of the file and on drop, so
/// the caller can go on reading `file` as before (the page checker re-reads suspect pages).
///
/// A file of more than [`AHEAD_AFTER`] bytes is read ahead: a thread of the reader's own
/// reads the next ranges while the caller works on the current one. A direct read bypasses the
/// kernel's readahead, so without this the disk idles while the caller checksums and
/// compresses a range, and the CPU idles while the disk reads the next one; on the 2-core
/// benchmark VM that made the 1 GiB segment of a scale-100 cluster the sum of both instead of
/// the larger of the two. At most [`AHEAD_BUFFERS`] ranges are in memory per file.
pub struct ScanReader<'a> {
    /// The caller's descriptor stays borrowed while the reader may switch `O_DIRECT` on the
    /// open file they share.
    _file: &'a File,
    source: Source,
    /// The current window: `buf.window() + pos .. buf.window() + filled` is unconsumed.
    buf: Option<Window>,
    pos: usize,
    filled: usize,
    done: bool,
}

/// Files larger than this are read ahead on a thread of their own.
pub const AHEAD_AFTER: u64 = 8 * RANGE as u64;
/// Ranges in memory per file read ahead: the one being consumed and two read ahead.
const AHEAD_BUFFERS: usize = 3;

enum Source {
    /// Read on the caller's thread, one range per fill.
    Inline(Ranges),
    Ahead(Ahead),
}

/// The read-ahead thread of one file and the channels to it. Ranges travel to the reader by
/// value and back to be refilled.
struct Ahead {
    filled: Option<Receiver<io::Result<(Window, usize)>>>,
    free: Option<SyncSender<Window>>,
    thread: Option<JoinHandle<()>>,
}

/// An aligned window of [`RANGE`] bytes inside an allocation of RANGE + align bytes.
struct Window {
    buf: Vec<u8>,
    start: usize,
}

impl Window {
    fn new(align: usize) -> Window {
        let buf = vec![0u8; RANGE + align];
        let start = buf.as_ptr().align_offset(align).min(align);
        Window { buf, start }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + RANGE]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + RANGE]
    }
}

/// Reads a file range by range, each direct or through the cache as the module docs say.
struct Ranges {
    file: File,
    /// Per range of the file as it was when the reader was made, whether all of its pages
    /// were cached; `None` when that cannot be asked.
    cached_at_open: Option<Vec<bool>>,
    direct: Direct,
    /// The alignment of direct reads' buffer, offset and length: a page (at least 4 KiB),
    /// which covers every logical block size in use.
    align: usize,
    /// File offset of the next read.
    offset: u64,
}

impl<'a> ScanReader<'a> {
    pub fn new(file: &'a File) -> io::Result<ScanReader<'a>> {
        let align = page_size().max(4096);
        let len = file.metadata().ok().map(|m| m.len());
        let cached_at_open = len.and_then(|len| {
            let mapping = Mapping::new(file, len)?;
            let ranges = len.div_ceil(RANGE as u64);
            Some(
                (0..ranges)
                    .map(|r| mapping.all_cached(r * RANGE as u64, RANGE))
                    .collect(),
            )
        });
        // The ranges are read from a descriptor of their own for the same open file: the
        // `O_DIRECT` flag they switch is the open file's, which `file` shares.
        let ranges = Ranges {
            file: file.try_clone()?,
            // Without knowing what is cached a direct read could re-read cached data from
            // disk: not worth it, read as before.
            direct: if cached_at_open.is_some() {
                Direct::Off
            } else {
                Direct::Unavailable
            },
            cached_at_open,
            align,
            offset: 0,
        };
        let (source, buf) = if len.is_some_and(|len| len > AHEAD_AFTER) {
            (Source::Ahead(Ahead::start(ranges)?), None)
        } else {
            (Source::Inline(ranges), Some(Window::new(align)))
        };
        Ok(ScanReader {
            _file: file,
            source,
            buf,
            pos: 0,
            filled: 0,
            done: false,
        })
    }

    /// Makes the next range current; false at the end of the file.
    fn next_range(&mut self) -> io::Result<bool> {
        match &mut self.source {
            Source::Inline(ranges) => {
                let window = self
                    .buf
                    .as_mut()
                    .expect("an inline reader keeps its window");
                self.filled = ranges.read_next(window)?;
            }
            Source::Ahead(ahead) => {
                if let (Some(window), Some(free)) = (self.buf.take(), &ahead.free) {
                    // The thread may have stopped at the end of the file: nothing to refill.
                    let _ = free.try_send(window);
                }
                let next = ahead.filled.as_ref().and_then(|filled| filled.recv().ok());
                let (window, n) =
                    next.ok_or_else(|| io::Error::other("the read-ahead thread stopped"))??;
                self.buf = Some(window);
                self.filled = n;
            }
        }
        self.pos = 0;
        Ok(self.filled > 0)
    }

    /// Ends read-ahead and gives the descriptor back with `O_DIRECT` off.
    fn stop(&mut self) {
        match &mut self.source {
            Source::Inline(ranges) => ranges.leave_direct(),
            Source::Ahead(ahead) => ahead.stop(),
        }
    }
}

impl Ranges {
    /// Reads the next range into `window`.
    fn read_next(&mut self, window: &mut Window) -> io::Result<usize> {
        let aligned = self.offset.is_multiple_of(self.align as u64);
        // Past the ranges known at open (the file grew) nothing was cached.
        let cached = self.cached_at_open.as_ref().is_none_or(|ranges| {
            usize::try_from(self.offset / RANGE as u64)
                .ok()
                .and_then(|r| ranges.get(r).copied())
                .unwrap_or(false)
        });
        let want_direct = aligned && !cached && self.direct != Direct::Unavailable;
        if want_direct && self.direct == Direct::Off && !self.set_direct(true) {
            self.direct = Direct::Unavailable;
        }
        if !want_direct && self.direct == Direct::On && !self.set_direct(false) {
            // Still direct: buffered reads would fail on alignment.
            return Err(io::Error::other("cannot switch O_DIRECT off"));
        }
        let n = loop {
            match self.file.read_at(window.bytes_mut(), self.offset) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A direct read the file system turned down after all: buffered from here on.
                Err(e)
                    if self.direct == Direct::On && e.raw_os_error() == Some(nix::libc::EINVAL) =>
                {
                    if !self.set_direct(false) {
                        return Err(e);
                    }
                    self.direct = Direct::Unavailable;
                }
                Err(e) => return Err(e),
            }
        };
        self.offset += n as u64;
        if n == 0 {
            self.leave_direct();
        }
        Ok(n)
    }

    /// Switches the descriptor's `O_DIRECT`; false when the file system refuses it.
    fn set_direct(&mut self, on: bool) -> bool {
        let Ok(bits) = fcntl(&self.file, FcntlArg::F_GETFL) else {
            return false;
        };
        let mut flags = OFlag::from_bits_truncate(bits);
        flags.set(OFlag::O_DIRECT, on);
        let ok = fcntl(&self.file, FcntlArg::F_SETFL(flags)).is_ok();
        if ok {
            self.direct = if on { Direct::On } else { Direct::Off };
        }
        ok
    }

    fn leave_direct(&mut self) {
        if self.direct == Direct::On {
            self.set_direct(false);
        }
    }
}

impl Ahead {
    fn start(mut ranges: Ranges) -> io::Result<Ahead> {
        let (free, free_windows) = sync_channel::<Window>(AHEAD_BUFFERS);
        for _ in 0..AHEAD_BUFFERS {
            // Room for every window: the channel holds AHEAD_BUFFERS.
            let _ = free.try_send(Window::new(ranges.align));
        }
        let (to_reader, filled) = sync_channel(AHEAD_BUFFERS);
        let thread = std::thread::Builder::new()
            .name("pgbr-scan".into())
            .spawn(move || {
                // Ends when the reader stops taking ranges (drop, error) or at the end.
                for mut window in free_windows {
                    let read = ranges.read_next(&mut window);
                    let last = !matches!(read, Ok(n) if n > 0);
                    if to_reader.send(read.map(|n| (window, n))).is_err() || last {
                        break;
                    }
                }
                ranges.leave_direct();
            })?;
        Ok(Ahead {
            filled: Some(filled),
            free: Some(free),
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        // Closing both channels ends the thread's loop wherever it waits.
        self.free = None;
        self.filled = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Read for ScanReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.pos == self.filled && !self.next_range()? {
            self.done = true;
            self.stop();
            return Ok(0);
        }
        let n = out.len().min(self.filled - self.pos);
        let window = self.buf.as_ref().expect("a current range").bytes();
        out[..n].copy_from_slice(&window[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for ScanReader<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A shared, read-only mapping of a file that is never read through, only asked about, and
/// unmapped as soon as it is dropped.
struct Mapping {
    addr: NonNull<std::ffi::c_void>,
    len: usize,
    page: usize,
}

impl Mapping {
    fn new(file: &File, len: u64) -> Option<Mapping> {
        let len = NonZeroUsize::new(usize::try_from(len).ok()?)?;
        // SAFETY: a new mapping at an address of the kernel's choosing, so no existing memory
        // is affected; it is only passed to mincore and munmap, never dereferenced, so a
        // file that shrinks meanwhile cannot raise SIGBUS.
        let addr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ,
                MapFlags::MAP_SHARED,
                file,
                0,
            )
        };
        addr.ok().map(|addr| Mapping {
            addr,
            len: len.get(),
            page: page_size(),
        })
    }

    /// Whether every page of `len` bytes from `offset` is in the page cache. Past the mapped
    /// length (the file grew since it was opened), or off a page boundary, nothing is known:
    /// not cached.
    fn all_cached(&self, offset: u64, len: usize) -> bool {
        let Ok(offset) = usize::try_from(offset) else {
            return false;
        };
        if offset >= self.len || !offset.is_multiple_of(self.page) {
            return false;
        }
        let len = len.min(self.len - offset);
        let mut vec = vec![0u8; len.div_ceil(self.page)];
        // SAFETY: `offset` is a multiple of the page size and `offset + len` lies within the
        // mapping, as mincore requires; `vec` has one byte per page of that span, which is
        // what mincore writes.
        let rc = unsafe {
            nix::libc::mincore(
                self.addr.as_ptr().cast::<u8>().add(offset).cast(),
                len,
                vec.as_mut_ptr(),
            )
        };
        rc == 0 && vec.iter().all(|v| v & 1 == 1)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in Mapping::new, unmapped once; no reference into it exists.
        let _ = unsafe { munmap(self.addr, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// On a disk file system: /var/tmp is one by convention, where /tmp may be tmpfs, whose
    /// pages cannot leave the cache.
    fn dir() -> tempfile::TempDir {
        tempfile::tempdir_in("/var/tmp").unwrap()
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| ((i / 7) as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Writes `data` durably and drops its pages from the cache.
    fn cold_file(path: &std::path::Path, data: &[u8]) -> File {
        let mut f = File::create(path).unwrap();
        f.write_all(data).unwrap();
        f.sync_all().unwrap();
        drop_cache(&f);
        File::open(path).unwrap()
    }

    /// A new file of `len` patterned bytes, none of them cached; the directory lives as long
    /// as the first value.
    fn cold_test_file(len: usize, seed: u8) -> (tempfile::TempDir, Vec<u8>, File) {
        let tmp = dir();
        let data = pattern(len, seed);
        let file = cold_file(&tmp.path().join("f"), &data);
        (tmp, data, file)
    }

    fn drop_cache(f: &File) {
        nix::fcntl::posix_fadvise(f, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED)
            .unwrap();
    }

    /// Pages of `f` from `offset` for `len` bytes that are in the page cache.
    fn cached_pages(f: &File, offset: usize, len: usize) -> usize {
        let m = Mapping::new(f, f.metadata().unwrap().len()).unwrap();
        (offset..offset + len)
            .step_by(m.page)
            .filter(|&at| m.all_cached(at as u64, m.page))
            .count()
    }

    fn scan(file: &File, out_len: usize) -> Vec<u8> {
        drain(&mut ScanReader::new(file).unwrap(), out_len)
    }

    /// The rest of what `reader` gives, read `out_len` bytes at a time.
    fn drain(reader: &mut ScanReader<'_>, out_len: usize) -> Vec<u8> {
        let mut back = Vec::new();
        let mut out = vec![0u8; out_len];
        loop {
            let n = reader.read(&mut out).unwrap();
            if n == 0 {
                return back;
            }
            back.extend_from_slice(&out[..n]);
        }
    }

    fn is_direct(f: &File) -> bool {
        OFlag::from_bits_truncate(fcntl(f, FcntlArg::F_GETFL).unwrap()).contains(OFlag::O_DIRECT)
    }

    #[test]
    fn every_byte_comes_through_for_any_size_cold_or_cached_and_any_read_size() {
        let tmp = dir();
        for (i, len) in [
            0,
            1,
            4095,
            4096,
            8192 + 17,
            RANGE - 1,
            RANGE,
            RANGE + 1,
            3 * RANGE + 12_345,
        ]
        .into_iter()
        .enumerate()
        {
            let data = pattern(len, i as u8);
            let path = tmp.path().join(format!("f{i}"));
            for out_len in [512 * 1024, 1000] {
                let file = cold_file(&path, &data);
                assert!(
                    scan(&file, out_len) == data,
                    "cold, {len} bytes, reads of {out_len}"
                );
                assert!(!is_direct(&file), "O_DIRECT left on after the end");
                // Now cached: through the cache, same bytes.
                let _ = fs_read(&path);
                assert!(
                    scan(&file, out_len) == data,
                    "cached, {len} bytes, reads of {out_len}"
                );
            }
        }
    }

    fn fs_read(path: &std::path::Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    /// The point of the reader: what was not cached stays out of the cache, what was cached
    /// stays in, and the descriptor reads normally afterwards.
    #[test]
    fn cold_ranges_are_read_around_the_cache_and_a_cached_range_through_it() {
        let (_tmp, data, file) = cold_test_file(4 * RANGE, 9);
        assert_eq!(
            cached_pages(&file, 0, data.len()),
            0,
            "precondition: /var/tmp must be on a disk file system whose pages can be dropped"
        );
        // Range 1 cached, by a buffered read of it.
        let mut warm = vec![0u8; RANGE];
        file.read_exact_at(&mut warm, RANGE as u64).unwrap();
        let range_pages = RANGE / page_size();
        assert_eq!(cached_pages(&file, RANGE, RANGE), range_pages);

        let mut reader = ScanReader::new(&file).unwrap();
        let mut back = vec![0u8; RANGE + 10];
        let n = reader.read(&mut back).unwrap();
        assert_eq!(n, RANGE, "one range per read at most");
        assert!(is_direct(&file), "the cold first range is read direct");
        let mut back = back[..n].to_vec();
        back.extend(drain(&mut reader, 300_000));
        assert!(back == data);
        assert!(!is_direct(&file));
        assert_eq!(cached_pages(&file, 0, RANGE), 0, "range 0 was not cached");
        assert_eq!(
            cached_pages(&file, RANGE, RANGE),
            range_pages,
            "range 1 still is"
        );
        assert_eq!(
            cached_pages(&file, 2 * RANGE, 2 * RANGE),
            0,
            "ranges 2-3 were not"
        );
        // A page re-read at an unaligned place into an unaligned buffer works: the page
        // checker does that after the scan.
        let mut page = vec![0u8; 8193];
        file.read_exact_at(&mut page[1..], 12_345).unwrap();
        assert!(page[1..] == data[12_345..12_345 + 8192]);
    }

    /// Sequential buffered reads leave readahead marks on the pages they bring in. Reading
    /// those cached ranges through the cache sets off readahead of the next ranges; were they
    /// then judged cached and read buffered in turn, the whole file would end up in the cache
    /// (reading a delta restore's files this way after its prefix check did that).
    /// That readahead now reaches one window past the cached part, at most: with 8 MiB read
    /// and windows of up to 16 MiB, the last 24 MiB of 64 stay out.
    #[test]
    fn reading_cached_ranges_does_not_pull_the_rest_of_the_file_into_the_cache() {
        let (_tmp, data, file) = cold_test_file(64 * RANGE, 5);
        let mut warm = vec![0u8; 8 * RANGE];
        (&file).read_exact(&mut warm).unwrap();
        assert_eq!(
            cached_pages(&file, 40 * RANGE, 24 * RANGE),
            0,
            "precondition"
        );
        assert!(scan(&file, 512 * 1024) == data);
        assert_eq!(
            cached_pages(&file, 40 * RANGE, 24 * RANGE),
            0,
            "the end of the file was read into the cache"
        );
    }

    /// The mapping is only asked about, so truncation cannot fault (SIGBUS), and growth past
    /// what was mapped is read too.
    #[test]
    fn a_file_truncated_or_extended_during_the_scan_reads_as_it_now_is() {
        let tmp = dir();
        let path = tmp.path().join("shrinks");
        let data = pattern(3 * RANGE, 1);
        let file = cold_file(&path, &data);
        let mut reader = ScanReader::new(&file).unwrap();
        let mut first = vec![0u8; RANGE];
        assert_eq!(reader.read(&mut first).unwrap(), RANGE);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(RANGE as u64 + 100)
            .unwrap();
        let rest = drain(&mut reader, 300_000);
        assert!(rest == data[RANGE..RANGE + 100]);

        let path = tmp.path().join("grows");
        let data = pattern(2 * RANGE, 2);
        let file = cold_file(&path, &data);
        let mut reader = ScanReader::new(&file).unwrap();
        assert_eq!(reader.read(&mut first).unwrap(), RANGE);
        let more = pattern(RANGE + 5, 3);
        File::options()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&more)
            .unwrap();
        let rest = drain(&mut reader, 300_000);
        assert!(rest[..RANGE] == data[RANGE..] && rest[RANGE..] == more[..]);
    }

    /// Past AHEAD_AFTER the ranges come from the read-ahead thread: every byte, cold or
    /// cached, and the descriptor gives back without `O_DIRECT` at the end and when the
    /// reader is dropped halfway (the thread stopped while it waits to read ahead).
    #[test]
    fn a_file_read_ahead_comes_through_whole_and_leaves_the_descriptor_as_found() {
        let len = AHEAD_AFTER as usize + 2 * RANGE + 777;
        let (tmp, data, file) = cold_test_file(len, 4);
        assert!(scan(&file, 512 * 1024) == data, "cold");
        assert!(!is_direct(&file), "O_DIRECT left on after the end");
        let _ = fs_read(&tmp.path().join("f"));
        assert!(scan(&file, 1000) == data, "cached");

        drop_cache(&file);
        let mut reader = ScanReader::new(&file).unwrap();
        let mut first = vec![0u8; RANGE];
        assert_eq!(reader.read(&mut first).unwrap(), RANGE);
        assert!(first[..] == data[..RANGE]);
        drop(reader);
        assert!(!is_direct(&file), "O_DIRECT left on after an early drop");
        let mut page = vec![0u8; 8192];
        file.read_exact_at(&mut page, 5 * RANGE as u64 + 3).unwrap();
        assert!(page[..] == data[5 * RANGE + 3..5 * RANGE + 3 + 8192]);
    }

    /// A file that cannot be mapped (here one of /proc's, of size 0) is read through the
    /// cache as before.
    #[test]
    fn a_file_that_cannot_be_mapped_is_read_as_before() {
        let file = File::open("/proc/version").unwrap();
        let back = scan(&file, 4096);
        assert!(!back.is_empty());
        assert!(back == fs_read(std::path::Path::new("/proc/version")));
    }
}
