"""Crash-safe files: every write goes to a temp file, is fsynced, then renamed over the target.

A process killed mid-save therefore leaves the previous file intact, never a torn one. The
temp file is named after its writer's process id, so a later write to the same folder can
remove what a killed writer left behind (issue 14: 8 orphans, 151 MB in 20 kills) without
touching a live writer's file. The target keeps its file mode.

A pool file is one `.npz`: named arrays plus a JSON document under the key `meta`. Reading
one checks every array's declared size against the bytes it holds before allocating it, so
a hostile header cannot make the reader ask for terabytes.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any, Callable, Union

import numpy as np

from smem.memory.settings import MemorySettings

FORMAT = "smem-pool"
FORMAT_VERSION = 1
DEFAULT_MODE = 0o644
"""Mode of a newly created file (before the umask), the mode `open()` would give it."""


class PoolFileError(ValueError):
    """A pool file that is missing, corrupt, inconsistent, or of another format/version."""


def cache_root() -> Path:
    """Where smem keeps what it can rebuild (embeddings, converted models): `MemorySettings.cache`."""
    return MemorySettings().cache


def _umask() -> int:
    """The process umask, read without changing it (Linux exposes it in /proc; elsewhere 022)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(path: Path) -> list[Path]:
    """Delete temp files of `path` whose writer process is gone; returns what was removed."""
    removed = []
    for candidate in path.parent.glob(f".{path.name}.*.tmp"):
        owner = candidate.name[len(path.name) + 2 :].split(".", 1)[0]
        if owner.isdigit() and int(owner) != os.getpid() and not _alive(int(owner)):
            try:
                candidate.unlink()
                removed.append(candidate)
            except FileNotFoundError:
                pass
    return removed


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Replace `path` with what `write` writes, all or nothing; the file keeps its mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = DEFAULT_MODE & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
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


def pool_file_bytes(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> bytes:
    """A pool file's content: what `write_pool_file` writes, for a download or a database row."""
    document = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, **meta}, ensure_ascii=False)
    payload = {**arrays, "meta": np.frombuffer(document.encode("utf-8"), dtype=np.uint8)}
    buffer = io.BytesIO()
    np.savez(buffer, **payload)
    return buffer.getvalue()


def write_pool_file(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    content = pool_file_bytes(arrays, meta)
    atomic_write(path, lambda fh: fh.write(content))


HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
"""The .npy header versions `np.savez` writes for plain numeric arrays."""


def _check_declared_sizes(archive: zipfile.ZipFile, name: str) -> None:
    """Refuse an array whose header declares more data than its zip member holds."""
    for info in archive.infolist():
        key = info.filename.removesuffix(".npy")
        with archive.open(info) as member:
            try:
                version = np.lib.format.read_magic(member)
                if version not in HEADER_READERS:
                    raise ValueError(f"unsupported .npy version {version}")
                shape, _, dtype = HEADER_READERS[version](member)
            except (ValueError, EOFError) as exc:
                raise PoolFileError(f"{name}: array {key!r} has a corrupt header: {exc}") from None
        declared = math.prod(shape) * dtype.itemsize
        if declared > info.file_size:
            raise PoolFileError(f"{name}: array {key!r} declares shape {shape} ({declared} bytes) but holds {info.file_size} bytes")


def read_pool_file(source: Union[str, Path, bytes]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and metadata of a pool file, from a path or from its bytes (an upload, a database row)."""
    name = "the pool file" if isinstance(source, bytes) else Path(source).name
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    except FileNotFoundError:
        raise PoolFileError(f"no pool file at {source}") from None
    except OSError as exc:
        raise PoolFileError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        with handle, zipfile.ZipFile(handle) as archive:
            _check_declared_sizes(archive, name)
            handle.seek(0)
            with np.load(handle, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
    except PoolFileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, MemoryError) as exc:
        raise PoolFileError(f"{name} is not a readable pool file: {exc}") from None
    if "meta" not in arrays:
        raise PoolFileError(f"{name} is not a pool file (no metadata)")
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PoolFileError(f"{name} has corrupt metadata: {exc}") from None
    if not isinstance(meta, dict):
        raise PoolFileError(f"{name}: field 'meta' must be a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise PoolFileError(f"{name} is format {meta.get('format')!r} v{meta.get('version')!r}; expected {FORMAT} v{FORMAT_VERSION}")
    return arrays, meta
