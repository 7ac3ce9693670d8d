"""What a run records beside its metrics, and atomic writing of result files."""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from made_exp import __version__

__all__ = [
    "run_metadata", "replace_atomically", "write_text_atomic", "write_json_atomic", "csv_text", "git_commit", "hardware"
]


def git_commit() -> str:
    """The commit of the code that ran (with ``+dirty`` for uncommitted changes), or ``unknown`` when the
    package does not run from a made_exp checkout (an installed wheel, even inside another git repo)."""
    package = Path(__file__).resolve().parents[1]
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=package, capture_output=True, text=True,
                             check=True).stdout.strip()
        if (Path(top) / "src" / "made_exp").resolve() != package:
            return "unknown"
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=package, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=package,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def package_version() -> str:
    """The installed made_exp version (what a wheel records where there is no git checkout)."""
    try:
        return importlib.metadata.version("made_exp")
    except importlib.metadata.PackageNotFoundError:
        return __version__


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict[str, str | int]:
    info: dict[str, str | int] = {
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_metadata(cfg: DictConfig, wall_time_s: float, commit: str) -> dict:
    """What results.json records beside the metrics; ``commit``: ``git_commit()`` taken when the run
    started (the checkout may move on while a run trains)."""
    return {
        "seeds": OmegaConf.to_container(cfg.seeds, resolve=True) if "seeds" in cfg else None,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "git_commit": commit,
        "made_exp_version": package_version(),
        "wall_time_s": round(wall_time_s, 2),
        "hardware": hardware(),
    }


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
