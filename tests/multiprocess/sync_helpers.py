"""Targets and helpers for the multi-process sync tests (importable by 'spawn' children)."""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

import interlink as il

COUNTER = struct.Struct("<q")


def open_counter(path: str) -> tuple[int, mmap.mmap]:
    fd = os.open(path, os.O_RDWR)
    return fd, mmap.mmap(fd, COUNTER.size)


def make_counter(tmp: Path, slots: int = 1) -> str:
    path = str(tmp / "counter")
    with open(path, "wb") as f:
        f.write(b"\0" * COUNTER.size * max(slots, 1))
    return path


def increment_target(lock: il.Lock, path: str, count: int) -> None:
    """Increment the counter at ``path`` ``count`` times, each under ``lock``."""
    fd, mm = open_counter(path)
    try:
        for _ in range(count):
            with lock:
                (v,) = COUNTER.unpack_from(mm, 0)
                COUNTER.pack_into(mm, 0, v + 1)
    finally:
        mm.close()
        os.close(fd)
        lock.close()


def bound_target(sem: il.Semaphore, guard: il.Lock, path: str, bound: int, rounds: int) -> None:
    """Enter ``sem`` ``rounds`` times; inside, count occupants and record any excess."""
    fd = os.open(path, os.O_RDWR)
    mm = mmap.mmap(fd, 16)
    try:
        for _ in range(rounds):
            with sem:
                with guard:
                    (inside,) = COUNTER.unpack_from(mm, 0)
                    inside += 1
                    COUNTER.pack_into(mm, 0, inside)
                    if inside > bound:
                        COUNTER.pack_into(mm, 8, 1)
                os.sched_yield()
                with guard:
                    (inside,) = COUNTER.unpack_from(mm, 0)
                    COUNTER.pack_into(mm, 0, inside - 1)
    finally:
        mm.close()
        os.close(fd)
        guard.close()
        sem.close()
