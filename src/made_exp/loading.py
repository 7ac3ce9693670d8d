"""Build the module a config describes, and rebuild a finished run (config, data, trained model) from its dir."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from made_exp.errors import RunDirError
from made_exp.module import MADEModule

__all__ = ["build_module", "load_run", "find_checkpoint"]


def find_checkpoint(run_dir: Path) -> Path:
    """The run's best checkpoint, else its last one."""
    for name in ("best.ckpt", "last.ckpt"):
        path = run_dir / "checkpoints" / name
        if path.is_file():
            return path
    raise RunDirError(
        f"{run_dir}: no checkpoints/best.ckpt or checkpoints/last.ckpt (is this a made-train run dir?)"
    )


def build_module(cfg: DictConfig, input_dim: int) -> MADEModule:
    """The untrained MADEModule a config describes: model, optimiser, mask schedule and ensemble."""
    return instantiate(
        cfg.module,
        model=instantiate(cfg.model, input_dim=input_dim),
        optimizer=instantiate(cfg.optimizer),
        masks=instantiate(cfg.masks),
        ensemble=instantiate(cfg.ensemble),
    )


def load_run(run_dir: str | Path, ensemble: DictConfig | None = None) -> tuple[DictConfig, object, MADEModule]:
    """(config, datamodule, module with the trained weights) of a made-train run dir.

    ``ensemble``, when given, replaces the run's test-time ensemble config.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.is_file():
        raise RunDirError(f"{run_dir}: no .hydra/config.yaml (is this a made-train run dir?)")
    cfg = OmegaConf.load(config_path)
    OmegaConf.update(cfg, "paths.output_dir", str(run_dir), force_add=True)
    if ensemble is not None:
        cfg.ensemble = ensemble
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule.input_dim)
    checkpoint = torch.load(find_checkpoint(run_dir), map_location="cpu", weights_only=False)
    module.load_state_dict(checkpoint["state_dict"])
    return cfg, datamodule, module
