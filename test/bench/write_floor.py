#!/usr/bin/env python3
"""Floor of a restore's writes (helper of test/bench/backup.sh; can be run by hand).

  write_floor.py WORKERS SRC DEST

Writes under DEST, at the same relative paths, one file of the same size for each regular
file under SRC (SRC/pg_wal left out, as a backup leaves out its contents), makes each durable
(fsync, and every directory once at the end), and does nothing else: no repository, no
decompression, no checksum, no attributes. This is the work a restore cannot avoid: the
bytes of the data directory written and made durable. Done the fastest way we know on this
machine, so that the benchmark can show how close each tool's restore comes to the disk:
  - WORKERS processes take files largest first, as both tools do;
  - files are written in 8 MiB pieces of one non-zero buffer (a virtual disk may turn zeros
    into discards), each piece's writeback started as soon as it is written and its pages
    dropped two pieces later (POSIX_FADV_DONTNEED), as pg_backrest's writers do, so that the
    disk writes while the next piece is produced and page cache is recycled.
DEST must not exist. Prints the file count, bytes and seconds.
"""
import os
import stat
import sys
import time

from read_hash import largest_first

PIECE = 8 << 20
DATA = os.urandom(PIECE)


def write_file(path, size):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        done = 0
        while done < size:
            n = os.write(fd, memoryview(DATA)[: min(PIECE, size - done)])
            os.posix_fadvise(fd, done, n, os.POSIX_FADV_DONTNEED)
            if done >= 2 * PIECE:
                os.posix_fadvise(fd, done - 2 * PIECE, PIECE, os.POSIX_FADV_DONTNEED)
            done += n
        os.fsync(fd)
    finally:
        os.close(fd)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    workers, src, dest = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    t0 = time.perf_counter()
    files, dirs = [], []
    for d, subdirs, names in os.walk(src):
        rel = os.path.relpath(d, src)
        if rel == ".":
            subdirs[:] = [s for s in subdirs if s != "pg_wal"]
        dirs.append(os.path.normpath(os.path.join(dest, rel)))
        os.makedirs(dirs[-1], mode=0o700)
        for n in names:
            try:
                st = os.lstat(os.path.join(d, n))
            except FileNotFoundError:  # SRC may be a running cluster's data directory
                continue
            if stat.S_ISREG(st.st_mode):
                files.append((os.path.join(dirs[-1], n), st.st_size))
    largest_first(files, workers, write_file, "write_floor.py")
    for d in dirs:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    print(f"wrote {len(files)} files, {sum(s for _, s in files)} bytes, durably, "
          f"in {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
