#!/usr/bin/env python3
"""Floor of a delta restore's check (helper of test/bench/backup.sh; can be run by hand).

  read_hash.py WORKERS DIR

Reads every regular file under DIR once and computes its SHA-1, and does nothing else: no
manifest, no repository, no comparison, no attributes. This is the work a delta restore of
an unchanged copy cannot avoid (the issue asks it to keep a file only when its SHA-1 matches
the manifest), done the fastest way we know on this machine, so that the benchmark can show
how close each tool comes to it:
  - WORKERS processes take files largest first, as both tools do;
  - files are read in 512 KiB pieces and their pages dropped behind every 8 MiB
    (POSIX_FADV_DONTNEED), which measured faster here than keeping them;
  - past 64 MiB a file is hashed on a thread beside its reads, so a 1 GiB segment costs
    max(read, SHA-1) rather than their sum (hashlib releases the GIL while it hashes).
hashlib's SHA-1 is OpenSSL's, which runs at the same speed as the Rust sha1 crate here
(1.5 GB/s with SHA-NI). Prints the file count, bytes and seconds.
"""
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


def sha1_of(path, size):
    sha = hashlib.sha1()
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


def worker(files, next_file, lock):
    while True:
        with lock:
            i = next_file.value
            next_file.value += 1
        if i >= len(files):
            return
        sha1_of(*files[i])


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    workers, top = int(sys.argv[1]), sys.argv[2]
    t0 = time.perf_counter()
    files = []
    for d, _, names in os.walk(top):
        for n in names:
            p = os.path.join(d, n)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                files.append((p, st.st_size))
    files.sort(key=lambda f: -f[1])
    next_file, lock = multiprocessing.Value("l", 0, lock=False), multiprocessing.Lock()
    procs = [multiprocessing.Process(target=worker, args=(files, next_file, lock))
             for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            sys.exit(f"read_hash.py: a worker failed (exit {p.exitcode})")
    print(f"read and hashed {len(files)} files, {sum(s for _, s in files)} bytes, "
          f"in {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
