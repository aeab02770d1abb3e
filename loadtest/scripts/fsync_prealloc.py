#!/usr/bin/env python3
"""Cost of one small write + fdatasync on this disk: appending to a growing file (what the
journal does today) against overwriting a file whose blocks were written beforehand (a
preallocated, zero-filled segment), as quoted in docs/benchmarks.md.

Usage: loadtest/scripts/fsync_prealloc.py [DIRECTORY] [COUNT] [RECORD_BYTES]
(defaults: the current directory, 3000 writes of 4096 bytes; two rounds of each kind, in turn).
Prints wall time and process CPU time (user + system) per write + fdatasync.
"""
import os
import resource
import sys
import time


def run(directory, preallocated, count, record):
    path = os.path.join(directory, "fsync-prealloc-test.bin")
    if os.path.exists(path):
        os.remove(path)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        if preallocated:
            os.write(fd, b"\0" * (count * record))
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        data = b"x" * record
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        for _ in range(count):
            os.write(fd, data)
            os.fdatasync(fd)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        os.close(fd)
        os.remove(path)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    kind = "overwriting preallocated blocks" if preallocated else "appending"
    print(f"{kind:32s} {wall / count * 1e6:7.0f} us per write+fdatasync, "
          f"{cpu / count * 1e6:5.0f} us CPU")


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    record = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
    for _ in range(2):
        run(directory, False, count, record)
        run(directory, True, count, record)


if __name__ == "__main__":
    main()
