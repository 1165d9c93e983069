"""Crash-safe files: every write goes to a temp file, is fsynced, then renamed over the target.

A process killed mid-save therefore leaves the previous file intact, never a torn one.
A pool file is one `.npz`: named arrays plus a JSON document under the key `meta`.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np

from smem.memory.settings import MemorySettings

FORMAT = "smem-pool"
FORMAT_VERSION = 1


class PoolFileError(ValueError):
    """A pool file that is missing, corrupt, or of another format/version."""


def cache_root() -> Path:
    """Where smem keeps what it can rebuild (embeddings, converted models): `MemorySettings.cache`."""
    return MemorySettings().cache


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_pool_file(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    document = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, **meta}, ensure_ascii=False)
    payload = {**arrays, "meta": np.frombuffer(document.encode("utf-8"), dtype=np.uint8)}
    atomic_write(path, lambda fh: np.savez(fh, **payload))


def read_pool_file(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise PoolFileError(f"no pool file at {path}") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise PoolFileError(f"{path.name} is not a readable pool file: {exc}") from None
    if "meta" not in arrays:
        raise PoolFileError(f"{path.name} is not a pool file (no metadata)")
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PoolFileError(f"{path.name} has corrupt metadata: {exc}") from None
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise PoolFileError(
            f"{path.name} is format {meta.get('format')!r} v{meta.get('version')!r}; expected {FORMAT} v{FORMAT_VERSION}"
        )
    return arrays, meta
