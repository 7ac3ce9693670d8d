"""Writing result files atomically, so that a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["replace_atomically", "write_text_atomic", "write_json_atomic", "csv_text"]


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(temporary_path)`` on a file beside ``path``, then rename it onto ``path``:
    readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see ``replace_atomically``)."""
    replace_atomically(path, lambda temporary: temporary.write_text(text))


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def csv_text(rows: list[dict], fields: Sequence[str]) -> str:
    """Rows as CSV with a header; None becomes an empty cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)
    return buffer.getvalue()
