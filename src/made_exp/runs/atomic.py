"""Writing run records atomically, so that a reader sees the old file or the new one, never half of one.

Every checkpoint, ``results.json``, evaluation and report goes through ``replace_atomically``: the new content is
written to a temporary file in the target's own directory (``.<name>.<random>.tmp``, never in ``$TMPDIR``, which
on a cluster is often another filesystem, where a rename cannot be atomic), flushed to the disk (fsync), renamed
onto the target, and the directory is fsynced so that the rename itself survives a crash. A write that fails
(disk full, a file-size limit, a quota) removes its temporary file, keeps the previous file and raises
``WriteError``: one line naming the file and the cause.

Example:
    >>> import re
    >>> bool(re.fullmatch(TEMPORARY_FILE, ".last.ckpt.k2x_9a0b.tmp")), bool(re.fullmatch(TEMPORARY_FILE, "a.tmp"))
    (True, False)
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from made_exp.errors import UserError

__all__ = [
    "TEMPORARY_FILE",
    "WriteError",
    "replace_atomically",
    "write_text_atomic",
    "write_bytes_atomic",
    "write_json_atomic",
    "torch_bytes",
    "write_torch_atomic",
    "remove_stray_temporary_files",
    "csv_text",
]

TEMPORARY_FILE = r"\..+\.[A-Za-z0-9_]{8}\.tmp"  # replace_atomically's temporary files (tempfile.mkstemp's 8 characters)
_NO_DIRECTORY_FSYNC = (errno.EINVAL, errno.ENOTSUP, errno.EBADF)  # filesystems that cannot fsync a directory


class WriteError(UserError):
    """A record that could not be written (disk full, file-size limit, quota, permissions); the previous file, if
    any, is kept."""


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(temporary_path)`` on a file beside ``path``, fsync it, rename it onto ``path`` and fsync the
    directory: readers see the old file or the new one, never half of one, whatever ``$TMPDIR`` is.
    WriteError, with the temporary file removed and ``path`` as it was, if the filesystem refuses."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _write_error(path, error) from error
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        _fsync(temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
        _fsync_directory(path.parent)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _write_error(path, error) from error
        raise


def _write_error(path: Path, error: OSError) -> WriteError:
    cause = os.strerror(error.errno) if error.errno else str(error)
    kept = f"; the previous {path.name} is kept" if path.is_file() else ""
    return WriteError(f"cannot write {path}: {cause[:1].lower() + cause[1:]}{kept}")


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the filesystem can fsync a directory at all)."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in _NO_DIRECTORY_FSYNC:
            raise
    finally:
        os.close(descriptor)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see ``replace_atomically``)."""
    replace_atomically(path, lambda temporary: temporary.write_text(text))


def write_bytes_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically."""
    replace_atomically(path, lambda temporary: temporary.write_bytes(data))


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def torch_bytes(payload: object) -> memoryview:
    """``torch.save(payload)`` into memory: the bytes of a checkpoint, to write with ``write_bytes_atomic``."""
    import torch  # here: the records of a run are written without loading torch

    serialised = io.BytesIO()
    torch.save(payload, serialised)
    return serialised.getbuffer()


def write_torch_atomic(path: Path, payload: object) -> None:
    """``torch.save(payload)`` to ``path`` atomically (a checkpoint). Serialised in memory first, as Lightning
    does: torch's own file writer reports a full disk as "unexpected pos", without the cause."""
    write_bytes_atomic(path, torch_bytes(payload))


def remove_stray_temporary_files(run_dir: Path) -> list[Path]:
    """Remove the temporary files that a process killed while writing left in ``run_dir`` and its
    ``checkpoints/`` (only ``replace_atomically``'s own ``.<name>.<random>.tmp``); returns them."""
    folders = [Path(run_dir), Path(run_dir) / "checkpoints"]
    stray = [path for folder in folders if folder.is_dir() for path in folder.glob(".*.tmp")]
    stray = [path for path in stray if re.fullmatch(TEMPORARY_FILE, path.name) and path.is_file()]
    for path in stray:
        path.unlink(missing_ok=True)
    return stray


def csv_text(rows: list[dict], fields: Sequence[str]) -> str:
    """Rows as CSV with a header; None becomes an empty cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)
    return buffer.getvalue()
