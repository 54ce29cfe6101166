"""The run-folder lock under contention: 50 processes released at one barrier never both hold it (issue #23, case 4).

Before, two processes taking the lock at the same instant both held it in 81 of 300 pairs (the second read the file
before the winner wrote its pid, took it as stale and deleted it). The lock is now an OS lock on the file.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time

from esn_lens.run.folder import LOCK_NAME, RunError, RunFolder

N = 50


def _slow_strftime(fmt, *a, _real=time.strftime):
    time.sleep(0.05)  # a writer slowed between taking the lock and writing its pid (the window of the old race)
    return _real(fmt, *a)


def _contender(path, start, done, results, wait_for_all):
    time.strftime = _slow_strftime  # in this child process only (fork)
    folder = RunFolder(path)
    start.wait()
    try:
        folder.acquire_lock()
    except RunError as e:
        results.put(("refused", str(e)))
        if wait_for_all:
            done.wait()
        return
    marker = os.path.join(path, "inside")
    try:  # a marker created exclusively: if it exists, someone else holds the lock right now
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        results.put(("twice", ""))
        if wait_for_all:
            done.wait()
        return
    if wait_for_all:
        done.wait()  # hold the lock until every contender has tried
    os.unlink(marker)
    folder.release(failed=False)
    results.put(("held", ""))


def contend(path, wait_for_all: bool) -> list[tuple[str, str]]:
    ctx = mp.get_context("fork")
    start, done, results = ctx.Barrier(N), ctx.Barrier(N), ctx.Queue()
    procs = [ctx.Process(target=_contender, args=(str(path), start, done, results, wait_for_all)) for _ in range(N)]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    return out


def kinds(out):
    return {k: sum(1 for kind, _ in out if kind == k) for k in ("held", "refused", "twice")}


def test_50_simultaneous_processes_one_holds_the_lock(tmp_path):
    out = contend(tmp_path, wait_for_all=True)
    assert kinds(out) == {"held": 1, "refused": N - 1, "twice": 0}
    assert all("is in use by another esn-lens run (pid " in msg for kind, msg in out if kind == "refused")
    assert not (tmp_path / LOCK_NAME).exists()  # released at the end


def test_50_processes_on_a_stale_lock_one_takes_it_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text("999999999 2026-01-01T00:00:00\n")  # a killed run's lock (no such process)
    out = contend(tmp_path, wait_for_all=True)
    assert kinds(out) == {"held": 1, "refused": N - 1, "twice": 0}
    assert not (tmp_path / LOCK_NAME).exists()


def test_50_processes_taking_and_releasing_never_overlap(tmp_path):
    out = contend(tmp_path, wait_for_all=False)  # the winner releases at once: others may take it in turn, never two at a time
    k = kinds(out)
    assert k["twice"] == 0 and k["held"] >= 1 and k["held"] + k["refused"] == N


def _try_lock(path):
    try:
        RunFolder(path).acquire_lock()
    except RunError as e:
        os._exit(3 if f"pid {os.getppid()}" in str(e) else 4)
    os._exit(0)


def test_lock_of_a_killed_process_is_free_at_once(tmp_path):
    ctx = mp.get_context("fork")
    p = ctx.Process(target=lambda: (RunFolder(tmp_path).acquire_lock(), os._exit(0)))  # dies holding it (no release)
    p.start()
    p.join(30)
    assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(p.pid)
    f = RunFolder(tmp_path)
    f.acquire_lock()
    assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    other = ctx.Process(target=_try_lock, args=(str(tmp_path),))  # a second process while this one holds it
    other.start()
    other.join(30)
    assert other.exitcode == 3
    f.release(failed=False)
    assert not (tmp_path / LOCK_NAME).exists()
