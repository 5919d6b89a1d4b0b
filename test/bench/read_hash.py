#!/usr/bin/env python3
"""Floor of a delta restore's check (helper of test/bench/backup.sh; can be run by hand).

  read_hash.py WORKERS DIR [sha1|none]

Reads every regular file under DIR once and computes its SHA-1 (with `none`: only reads it),
and does nothing else: no manifest, no repository, no comparison, no attributes. This is the
work a delta restore of an unchanged copy cannot avoid (it keeps a file only when its
checksum matches the manifest: pgBackRest's is the whole file's SHA-1; pg_backrest checks a
large file's blocks with XXH3-128, which costs a fraction of the read here, so its floor is the
read alone), done the fastest way we know on this machine, so that the benchmark can show
how close each tool comes to it:
  - WORKERS processes take files largest first, as both tools do;
  - files are read in 512 KiB pieces and their pages dropped behind every 8 MiB
    (POSIX_FADV_DONTNEED), which measured faster here than keeping them;
  - past 64 MiB a file is hashed on a thread beside its reads, so a 1 GiB segment costs
    max(read, SHA-1) rather than their sum (hashlib releases the GIL while it hashes).
hashlib's SHA-1 is OpenSSL's, which runs at the same speed as the Rust sha1 crate here
(1.5 GB/s with SHA-NI). Prints the file count, bytes and seconds.
"""
import functools
import hashlib
import multiprocessing
import os
import queue
import stat
import sys
import threading
import time

CHUNK = 512 * 1024
DROP_EVERY = 8 << 20
BESIDE_AFTER = 64 << 20


def read_pieces(fd, put):
    dropped = done = 0
    while True:
        buf = os.read(fd, CHUNK)
        if not buf:
            break
        put(buf)
        done += len(buf)
        if done - dropped >= DROP_EVERY:
            os.posix_fadvise(fd, dropped, done - dropped, os.POSIX_FADV_DONTNEED)
            dropped = done
    os.posix_fadvise(fd, dropped, 0, os.POSIX_FADV_DONTNEED)


class NoHash:
    def update(self, _buf):
        pass

    def hexdigest(self):
        return ""


def checksum_of(path, size, hashed):
    sha = hashlib.sha1() if hashed else NoHash()
    fd = os.open(path, os.O_RDONLY)
    try:
        if size <= BESIDE_AFTER:
            read_pieces(fd, sha.update)
            return sha.hexdigest()
        pieces = queue.Queue(maxsize=4)

        def hash_pieces():
            while (buf := pieces.get()) is not None:
                sha.update(buf)

        hasher = threading.Thread(target=hash_pieces)
        hasher.start()
        try:
            read_pieces(fd, pieces.put)
        finally:
            pieces.put(None)
            hasher.join()
        return sha.hexdigest()
    finally:
        os.close(fd)


def _take(files, next_file, lock, fn):
    while True:
        with lock:
            i = next_file.value
            next_file.value += 1
        if i >= len(files):
            return
        fn(*files[i])


def largest_first(files, workers, fn, name):
    """Runs fn(path, size) for each of `files` on `workers` processes, largest first, as
    both tools hand out files; exits the program if a worker failed. Shared with
    write_floor.py."""
    files.sort(key=lambda f: -f[1])
    next_file, lock = multiprocessing.Value("l", 0, lock=False), multiprocessing.Lock()
    procs = [multiprocessing.Process(target=_take, args=(files, next_file, lock, fn))
             for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            sys.exit(f"{name}: a worker failed (exit {p.exitcode})")


def main():
    if len(sys.argv) not in (3, 4) or sys.argv[3:] not in ([], ["sha1"], ["none"]):
        sys.exit(__doc__)
    workers, top = int(sys.argv[1]), sys.argv[2]
    hashed = sys.argv[3:] != ["none"]
    t0 = time.perf_counter()
    files = []
    for d, _, names in os.walk(top):
        for n in names:
            p = os.path.join(d, n)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                files.append((p, st.st_size))
    largest_first(files, workers, functools.partial(checksum_of, hashed=hashed), "read_hash.py")
    print(f"read {'and hashed ' if hashed else ''}{len(files)} files, "
          f"{sum(s for _, s in files)} bytes, in {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
