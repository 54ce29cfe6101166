"""Atomic, self-describing files: tensors in safetensors, metadata as JSON in its header."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CorruptFileError, InputError, MissingFileError

FORMAT_KEY = "esn_lens_format"
#: header key of the content checksum: sha256 over every tensor's name, dtype, shape and bytes
CHECKSUM_KEY = "esn_lens_sha256"


def tensor_checksum(tensors: dict[str, torch.Tensor], meta_text: str = "") -> str:
    """sha256 of ``tensors`` (sorted by name; each name, dtype, shape and raw bytes) and of the metadata text.

    Any flipped data byte, or edited metadata, changes it.

    Example: ``tensor_checksum({"x": torch.zeros(2)}) != tensor_checksum({"x": torch.ones(2)})``.
    """
    h = hashlib.sha256(meta_text.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename: a crash never leaves a half file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # read-only folder, a file where a folder should be, ...: name the file meant
        raise _naming(e, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; run folders are meant to be shared
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):  # e.g. disk full (errno 28): one error naming the file being written
            raise _naming(e, path) from None
        raise


def _naming(e: OSError, path: Path) -> OSError:
    """The same kind of OSError (errno, message) naming ``path``, the file the caller meant to write."""
    if e.errno is None:
        return e
    try:
        return type(e)(e.errno, e.strerror or os.strerror(e.errno), str(path))
    except TypeError:
        return OSError(e.errno, e.strerror or os.strerror(e.errno), str(path))


def _os_error_of(e: Exception, path: Path) -> OSError:
    """The OSError inside a safetensors write error (``... Os { code: 28, ... }``) naming ``path``; EIO if none."""
    import errno
    import re

    m = re.search(r"code:\s*(\d+)", str(e))
    code = int(m.group(1)) if m else errno.EIO
    return OSError(code, os.strerror(code) if m else f"cannot write ({e})", str(path))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], kind: str, meta: dict[str, Any]) -> None:
    """Save ``tensors`` with JSON ``meta`` (tagged with ``kind``) atomically to a safetensors file."""
    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta_text = json.dumps(meta)
    header = {FORMAT_KEY: kind, "meta": meta_text, CHECKSUM_KEY: tensor_checksum(tensors, meta_text)}
    fd, tmp = tempfile.mkstemp(dir=path.parent if path.parent.exists() else None, suffix=".safetensors")
    os.close(fd)
    try:
        try:
            save_file(tensors, tmp, metadata=header)
        except SafetensorError as e:  # safetensors wraps the OS error (e.g. disk full) in its own type
            raise _os_error_of(e, path) from None
        atomic_write_bytes(path, Path(tmp).read_bytes())
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_tensors(path: str | os.PathLike, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a file written by :func:`save_tensors`; refuse a corrupt file or one of another ``kind``.

    A file carrying a content checksum (every file this version writes) is refused when any tensor's bytes,
    dtype or shape, or the metadata text, differ from what was written. Files of earlier versions carry none; they load, and the
    caller's own checks (dtypes, shapes, counts) are then the only guard.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: no such file (expected an esn_lens {kind} file)")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CorruptFileError(f"{path}: not a readable esn_lens {kind} file ({e})") from None
    found = header.get(FORMAT_KEY)
    if found != kind:
        raise CorruptFileError(f"{path}: expected an esn_lens {kind} file, found {found or 'a foreign safetensors file'}")
    try:
        meta = json.loads(header.get("meta", "{}"))
    except json.JSONDecodeError as e:
        raise CorruptFileError(f"{path}: damaged metadata ({e})") from None
    expected = header.get(CHECKSUM_KEY)
    if expected is not None and tensor_checksum(tensors, header.get("meta", "")) != expected:
        raise CorruptFileError(f"{path}: damaged esn_lens {kind} file (tensor data or metadata do not match the "
                               "checksum written with them: the file was altered after it was saved)")
    return tensors, meta


# ---------------------------------------------------------------------- run-folder JSON (read by the run and the report)
class _RunFileDict(dict):
    """A JSON object read from a run file: a missing key is a :class:`CorruptFileError` naming file and key."""

    path: str = ""

    def __missing__(self, key: Any) -> Any:
        raise CorruptFileError(f"{self.path}: damaged run file (no key {key!r}); the file was edited or cut short "
                               "-- choose another --out or remove the folder")


def read_run_json(path: str | Path) -> dict[str, Any]:
    """A JSON object of a run folder; damage (not JSON, not an object, later a missing key) is a one-line
    :class:`CorruptFileError` naming the file (e.g. ``clips.json`` holding ``[]``)."""
    path = Path(path)

    def hook(pairs):
        d = _RunFileDict(pairs)
        d.path = str(path)
        return d

    try:
        with open(path) as f:
            obj = json.load(f, object_pairs_hook=hook)
    except RecursionError:
        raise CorruptFileError(f"{path}: damaged run file (JSON nested too deeply to be one this library wrote); "
                               "choose another --out or remove the folder") from None
    except json.JSONDecodeError as e:
        raise CorruptFileError(f"{path}: damaged run file (not JSON: {e}); choose another --out or remove the folder") from None
    except UnicodeDecodeError as e:
        raise CorruptFileError(f"{path}: damaged run file (not text: {e}); choose another --out or remove the folder") from None
    if not isinstance(obj, dict):
        raise CorruptFileError(f"{path}: damaged run file (expected a JSON object, found {type(obj).__name__} "
                               f"{json.dumps(obj)[:40]}); choose another --out or remove the folder")
    return obj


def load_results(run_dir: str | Path) -> dict[str, Any]:
    """``results.json`` of a finished run, with a clear error for a folder that is not one."""
    p = Path(run_dir).expanduser()
    if not p.is_dir():
        raise InputError(f"run folder {run_dir} does not exist")
    f = p / "results.json"
    if not f.is_file():
        hint = " (the run did not finish; continue it with --resume)" if (p / "progress.json").exists() else ""
        raise InputError(f"{p} holds no results.json{hint}")
    from .results_check import check_results

    return check_results(read_run_json(f), f)
