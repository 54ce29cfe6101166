"""The run folder: identity, progress file, lock, atomic files, and the one checkpointed streaming loop.

``progress.json`` holds the run's identity (config + model) and the completed stages with their seconds; a stage
is marked done only after its output is complete. :meth:`RunFolder.stream` is the loop every streaming stage
(statistics, each evaluation) runs through: it consumes items in chunks, saves a checkpoint at each chunk
boundary, calls :data:`CHECKPOINT_HOOKS` after each one (tests use a hook to stop a run at a known point), and
resumes from the last checkpoint. Under ``torch.distributed`` only rank 0 writes; every rank reads.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import IncompatibleError, InputError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
from ..io import atomic_write_json, read_run_json

RESULTS_VERSION = 1
#: lock file of a run folder in use (holds the pid of the process running it)
LOCK_NAME = ".esn_lens.lock"
#: Called as ``hook(stage, consumed)`` after each checkpoint is written (e.g. to stop a run mid-stage in a test,
#: or to report progress). A ``--plugin`` module can append to it.
CHECKPOINT_HOOKS: list[Callable[[str, int], None]] = []


class RunError(InputError):
    """A run folder cannot be started or resumed as asked (exists, differs, incomplete)."""


def digest(obj: Any) -> str:
    """A short, stable hash of a JSON-able object (the run's key)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _pid_in(fd: int) -> int:
    """The pid written at the start of an open lock file, or -1."""
    try:
        return int(os.pread(fd, 64, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return -1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunFolder:
    """One run folder on disk. ``main``: this process writes (rank 0, or the only process)."""

    def __init__(self, path: str | Path, *, resume: bool = False, main: bool = True,
                 log: Callable[[str], None] = lambda msg: None, barrier: Callable[[], None] = lambda: None):
        self.dir = Path(path).expanduser()
        self.resume = resume
        self.main = main
        self.log = log
        self.barrier = barrier
        self.progress: dict[str, Any] = {"stages": {}}
        self.key = ""
        self._lock: Path | None = None
        self._lock_fd: int | None = None
        self._created = False

    # ------------------------------------------------------------------ files
    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def read_json(self, *parts: str) -> Any:
        return read_run_json(self.path(*parts))

    def write_json(self, obj: Any, *parts: str) -> None:
        if self.main:
            atomic_write_json(self.path(*parts), obj)

    @property
    def progress_path(self) -> Path:
        return self.path("progress.json")

    def done(self, stage: str) -> bool:
        return bool(self.progress["stages"].get(stage, {}).get("done"))

    def seconds(self, stage: str) -> float | None:
        return self.progress["stages"].get(stage, {}).get("seconds")

    def mark(self, stage: str, seconds: float, **extra: Any) -> None:
        """Record ``stage`` as done (after its output is complete)."""
        self.progress["stages"][stage] = {"done": True, "seconds": round(seconds, 4), **extra}
        self.write_json(self.progress, "progress.json")

    # ------------------------------------------------------------------ before the model loads
    def preflight(self) -> None:
        """Refuse ``out`` a file, holding a run (without ``resume``) or other files, or not writable. Creates nothing."""
        d = self.dir
        if d.exists() and not d.is_dir():
            raise RunError(f"--out {d} is a file, not a folder; choose another --out")
        if d.is_dir():
            if self.progress_path.exists():
                if not self.resume:
                    raise RunError(f"{d} already holds a run; pass --resume to continue it, or choose another --out")
            elif any(p.name != LOCK_NAME for p in d.iterdir()):
                if self.resume:
                    raise RunError(f"{d} holds no run to resume (no progress.json)")
                raise RunError(f"{d} exists and is not empty; choose another --out")
        anc = d
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        if not anc.is_dir():
            raise RunError(f"--out {d}: {anc} is a file, not a folder; choose another --out")
        try:  # a real write: os.access says yes to root on a read-only mount
            fd, probe = tempfile.mkstemp(dir=anc, prefix=".esn_lens_probe.")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise RunError(f"--out {d}: cannot write in {anc} ({e.strerror or e}); choose another --out") from None

    def acquire_lock(self) -> None:
        """Create the folder (remembering whether this command did) and take its lock; refuse a folder another live
        process holds.

        The lock is an OS lock (``flock``) on ``RUN/.esn_lens.lock``, taken atomically and dropped by the OS when the
        process dies, so two processes can never both hold it and a killed run's lock is free at once. The file
        also holds the pid (for the message, and for lock files written by a live process of an older version).
        """
        self._created = not self.dir.exists()
        self.dir.mkdir(parents=True, exist_ok=True)
        lock = self.path(LOCK_NAME)
        if fcntl is None:  # pragma: no cover - no flock (Windows): exclusive create, stale if its pid is gone
            return self._acquire_excl(lock)
        for _ in range(100):  # retried only when the file was replaced between our open and our lock
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pid = _pid_in(fd)
                os.close(fd)
                raise self._in_use(pid, lock) from None
            try:
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder released (unlinked) it after we opened: try the new file
                os.close(fd)
                continue
            pid = _pid_in(fd)
            if pid > 0 and pid != os.getpid() and _alive(pid):  # written by a live process without the OS lock
                os.close(fd)
                raise self._in_use(pid, lock)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode(), 0)
            self._lock, self._lock_fd = lock, fd
            return
        raise RunError(f"{self.dir}: cannot take the lock file {lock}")

    def _in_use(self, pid: int, lock: Path) -> RunError:
        return RunError(f"{self.dir} is in use by another esn-lens run (pid {pid if pid > 0 else 'unknown'}; lock file "
                        f"{lock}); wait for it to finish, or remove the lock file if that process is gone")

    def _acquire_excl(self, lock: Path) -> None:  # pragma: no cover - platforms without flock
        tmp = lock.with_name(f"{LOCK_NAME}.{os.getpid()}")
        tmp.write_text(f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")  # the pid is in it before it counts
        try:
            for _ in range(2):
                try:
                    os.link(tmp, lock)  # atomic, and the file is complete when it appears
                except FileExistsError:
                    try:
                        pid = int(lock.read_text().split()[0])
                    except (OSError, ValueError, IndexError):
                        pid = -1
                    if pid > 0 and _alive(pid):
                        raise self._in_use(pid, lock) from None
                    lock.unlink(missing_ok=True)
                    continue
                self._lock = lock
                return
        finally:
            tmp.unlink(missing_ok=True)
        raise RunError(f"{self.dir}: cannot take the lock file {lock}")

    def release(self, failed: bool) -> None:
        """Drop the lock; after a failure, remove a folder this command created if no stage completed."""
        if self._lock is not None:
            self._lock.unlink(missing_ok=True)  # unlinked while still held: a waiter sees a new file, never ours
            self._lock = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        stages = self.progress.get("stages", {})
        if failed and self._created and not any(v.get("done") for v in stages.values()):
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ identity
    def open(self, identity: dict[str, Any], model_id: dict[str, Any], config: dict[str, Any],
             stage_names: Sequence[str]) -> None:
        """Start a new run folder, or check that the existing one is this run (config and model)."""
        key = digest({"config": identity, "model": model_id})
        if self.progress_path.exists():
            if not self.resume:
                raise RunError(f"{self.dir} already holds a run; pass --resume to continue it, or choose another --out")
            try:
                prog = self.read_json("progress.json")
            except OSError as e:
                raise RunError(f"{self.progress_path}: unreadable ({e}); choose another --out") from None
            if prog.get("key") != key:
                diffs = [f"{k}: {prog.get('config', {}).get(k)!r} there, {v!r} now"
                         for k, v in identity.items() if prog.get("config", {}).get(k) != v]
                diffs += [f"model {k}: {prog.get('model', {}).get(k)!r} there, {v!r} now"
                          for k, v in model_id.items() if prog.get("model", {}).get(k) != v]
                raise IncompatibleError(f"{self.dir} was started with another model or configuration "
                                        f"({'; '.join(diffs) or 'different identity'}); resume with the same options "
                                        "or choose another --out")
            self.progress = prog
            self.log(f"resuming {self.dir}: done {[s for s in stage_names if self.done(s)] or 'nothing yet'}")
        else:
            if self.dir.exists() and any(p.name != LOCK_NAME for p in self.dir.iterdir()) and not self.resume:
                raise RunError(f"{self.dir} exists and is not empty; choose another --out")
            self.progress = {"version": RESULTS_VERSION, "key": key, "config": identity, "model": model_id,
                             "stages": {}, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
            if self.main:
                self.dir.mkdir(parents=True, exist_ok=True)
            self.write_json(self.progress, "progress.json")
        self.key = key
        self.write_json(config, "config.json")

    def join(self, identity: dict[str, Any], model_id: dict[str, Any]) -> None:
        """Another rank's view of the folder rank 0 has just opened (read, never written)."""
        key = digest({"config": identity, "model": model_id})
        self.progress = self.read_json("progress.json")
        if self.progress.get("key") != key:
            raise IncompatibleError(f"{self.dir}: the ranks disagree on the run's identity (another model or "
                                    "configuration on this rank)")
        self.key = key

    # ------------------------------------------------------------------ the checkpointed streaming loop
    def stream(self, stage: str, items: Sequence[Any], step: int, *, work: Callable[[Sequence[Any]], None],
               save: Callable[[Path, int, float], None], load: Callable[[Path], tuple[int, float]],
               checkpoint: str, desc: str, progress: bool) -> float:
        """Feed ``items`` to ``work`` in chunks of ``step``, checkpointing between chunks; returns the stage's seconds.

        ``load(path) -> (consumed, elapsed)`` restores the state of an existing checkpoint file ``checkpoints/
        <checkpoint>``; ``save(path, consumed, elapsed)`` writes it (rank 0 only). After each checkpoint every rank
        waits for the file, then :data:`CHECKPOINT_HOOKS` run. The checkpoint is removed when the stage completes.
        """
        from tqdm.auto import tqdm

        ckpt = self.path("checkpoints", checkpoint)
        consumed, elapsed = 0, 0.0
        if ckpt.exists():
            consumed, elapsed = load(ckpt)
            self.log(f"[{stage}] resuming from clip {consumed} of {len(items)}")
        bar = tqdm(total=len(items), initial=consumed, desc=desc, unit="clip", disable=not (progress and self.main),
                   file=sys.stderr)
        t0 = time.perf_counter()
        for start in range(consumed, len(items), step):
            chunk = items[start:start + step]
            work(chunk)
            consumed = start + len(chunk)
            bar.update(len(chunk))
            if consumed < len(items):
                elapsed += time.perf_counter() - t0
                t0 = time.perf_counter()
                if self.main:
                    ckpt.parent.mkdir(parents=True, exist_ok=True)
                    save(ckpt, consumed, elapsed)
                self.barrier()
                for hook in list(CHECKPOINT_HOOKS):
                    hook(stage, consumed)
        bar.close()
        return elapsed + time.perf_counter() - t0

    def drop_checkpoint(self, checkpoint: str) -> None:
        p = self.path("checkpoints", checkpoint)
        if self.main and p.exists():
            p.unlink()

    def check_checkpoint(self, ckpt: Path, ok: bool, detail: str = "") -> None:
        if not ok:
            raise IncompatibleError(f"checkpoint {ckpt} belongs to another model, configuration or clip list"
                                    f"{detail}; choose another --out")


__all__ = ["RunFolder", "RunError", "LOCK_NAME", "CHECKPOINT_HOOKS", "RESULTS_VERSION", "digest", "read_run_json"]
