"""What a run records beside its metrics: seeds, config, commit or package version, hardware, wall time."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from made_exp.runs.provenance import package_version

__all__ = ["run_metadata", "hardware"]


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
