"""What a run records beside its metrics: seeds, config, commit or package version, hardware, wall time."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from made_exp import __version__

__all__ = ["run_metadata", "git_commit", "package_version", "hardware"]


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
