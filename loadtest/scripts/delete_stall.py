#!/usr/bin/env python3
"""How deleting journal segments stalls the journal's fsyncs beside it, as quoted in
docs/benchmarks.md.

A thread writes 2 KiB and fdatasyncs it every millisecond into an allocated file (the journal's
pace at 10,000 msgs/s); meanwhile COUNT files of 64 MiB, written and fsynced beforehand, are
deleted: not at all ("none"), each unlinked at once ("unlink"), or each cut down 4 MiB at a time
20 ms apart and then unlinked ("steps", a rate-limited deletion: tried for the journal's
reaper, not kept). Prints the fsyncs' p50 / p99 / worst, and how many took over 10 ms.

Usage: loadtest/scripts/delete_stall.py [DIRECTORY] [COUNT] [ROUNDS]
(defaults: the current directory, 6 files, 2 rounds of the three ways in turn). Run it on the
file system the journal uses; the stall shows where it is mounted with `discard`.
"""
import os
import sys
import threading
import time

SEGMENT = 64 << 20
STEP = 4 << 20
PAUSE = 0.02


def prepare(directory, count):
    paths = []
    chunk = b"x" * (1 << 20)
    for i in range(count):
        path = os.path.join(directory, f"delete-stall-{i}.bin")
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        for _ in range(SEGMENT // len(chunk)):
            os.write(fd, chunk)
        os.fsync(fd)
        os.close(fd)
        paths.append(path)
    return paths


def delete(paths, way):
    for path in paths:
        if way == "steps":
            fd = os.open(path, os.O_WRONLY)
            length = os.fstat(fd).st_size
            while length > STEP:
                length -= STEP
                os.ftruncate(fd, length)
                time.sleep(PAUSE)
            os.close(fd)
        if way != "none":
            os.unlink(path)


def run(directory, count, way):
    paths = prepare(directory, count)
    time.sleep(1)
    latencies = []
    stop = threading.Event()
    journal = os.path.join(directory, "delete-stall-journal.bin")

    def writer():
        fd = os.open(journal, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        os.posix_fallocate(fd, 0, SEGMENT)
        offset, data = 0, b"y" * 2048
        while not stop.is_set():
            os.pwrite(fd, data, offset)
            offset = (offset + len(data)) % SEGMENT
            start = time.perf_counter()
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - start)
            time.sleep(0.001)
        os.close(fd)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(1)
    started = time.perf_counter()
    delete(paths, way)
    took = time.perf_counter() - started
    time.sleep(3)
    stop.set()
    thread.join()
    os.unlink(journal)
    for path in paths:
        if os.path.exists(path):
            os.unlink(path)
    latencies.sort()
    ms = lambda seconds: seconds * 1e3
    print(
        f"{way:6s} deleting took {ms(took):7.1f} ms; {len(latencies)} fsyncs: "
        f"p50 {ms(latencies[len(latencies) // 2]):.2f} ms, "
        f"p99 {ms(latencies[int(len(latencies) * 0.99)]):.2f} ms, "
        f"worst {ms(latencies[-1]):.1f} ms, "
        f"over 10 ms: {sum(1 for x in latencies if x > 0.01)}"
    )


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    for _ in range(rounds):
        for way in ("none", "unlink", "steps"):
            run(directory, count, way)


if __name__ == "__main__":
    main()
