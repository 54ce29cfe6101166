"""Atomic, self-describing files: tensors in safetensors, metadata as JSON in its header."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CorruptFileError, MissingFileError

FORMAT_KEY = "esn_lens_format"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename: a crash never leaves a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; run folders are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], kind: str, meta: dict[str, Any]) -> None:
    """Save ``tensors`` with JSON ``meta`` (tagged with ``kind``) atomically to a safetensors file."""
    path = Path(path)
    header = {FORMAT_KEY: kind, "meta": json.dumps(meta)}
    fd, tmp = tempfile.mkstemp(dir=path.parent if path.parent.exists() else None, suffix=".safetensors")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=header)
        atomic_write_bytes(path, Path(tmp).read_bytes())
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_tensors(path: str | os.PathLike, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a file written by :func:`save_tensors`; refuse a corrupt file or one of another ``kind``."""
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
    return tensors, meta
