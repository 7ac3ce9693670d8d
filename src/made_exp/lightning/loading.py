"""Build the module a config describes, and rebuild a finished run (config, data, trained model) from its dir."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from made_exp.errors import RunDirError, UserError
from made_exp.lightning.module import MADEModule
from made_exp.runs.rundir import RunDir, check_checkpoint

__all__ = [
    "best_checkpoint",
    "build_datamodule",
    "build_module",
    "load_run",
    "find_checkpoint",
    "checkpoint_digest",
    "warm_start",
]

# Where the classes named by runs trained before the package was split into layers (0.1) live now.
_MOVED_TARGETS = {
    "made_exp.made.": "made_exp.core.made.",
    "made_exp.masking.": "made_exp.core.masks.",
    "made_exp.ensemble.": "made_exp.core.ensemble.",
    "made_exp.data.": "made_exp.data.datamodules.",
    "made_exp.module.": "made_exp.lightning.module.",
}


def find_checkpoint(run_dir: Path, which: str = "best") -> Path:
    """The run's ``best`` (the epoch with the best val/nll) or ``last`` checkpoint, or a checkpoint file's path;
    RunDirError naming what is missing or unreadable. Never falls back from one to the other."""
    path = {"best": RunDir(run_dir).best_checkpoint, "last": RunDir(run_dir).last_checkpoint}.get(which, Path(which))
    if which == "best" and not path.is_file() and RunDir(run_dir).last_checkpoint.is_file():
        raise RunDirError(f"{path}: no such checkpoint (the run has checkpoints/last.ckpt: pass --checkpoint last)")
    return check_checkpoint(path)


def checkpoint_digest(path: Path) -> str:
    """SHA-256 of the checkpoint file's ``state_dict`` (names, dtypes, values): which weights were scored, whatever
    else the file holds (optimiser state) and wherever it was copied. Of the file, not of a module loaded from it:
    loading resets a bank's current-mask buffers."""
    state_dict = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        digest.update(name.encode())
        if torch.is_tensor(value):
            digest.update(str(value.dtype).encode())
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def best_checkpoint(trainer: pl.Trainer) -> ModelCheckpoint | None:
    """The checkpoint callback that keeps the best val score, best.ckpt (the one for last.ckpt monitors nothing)."""
    return next((callback for callback in trainer.checkpoint_callbacks if callback.monitor), None)


def build_datamodule(data: DictConfig):
    """The DataModule ``data`` (the config's ``data`` node) describes; a UserError its constructor raises (an
    unknown dataset name, no name and no path) comes out as itself, not wrapped in Hydra's InstantiationException."""
    try:
        return instantiate(data)
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise


def build_module(cfg: DictConfig, input_dim: int) -> MADEModule:
    """The untrained MADEModule a config describes: model, optimiser, mask schedule and ensemble."""
    return instantiate(
        cfg.module,
        model=instantiate(cfg.model, input_dim=input_dim),
        optimizer=instantiate(cfg.optimizer),
        masks=instantiate(cfg.masks),
        ensemble=instantiate(cfg.ensemble),
    )


def warm_start(module: MADEModule, source: str | Path) -> Path:
    """Load the network's weights (``model.*``: weights, biases and the mask bank) from a run dir's best checkpoint
    or a checkpoint file into ``module``; nothing else (optimiser, objective state) comes along. Returns the file;
    RunDirError in one line where it is missing or its network differs from this run's (D, widths, K)."""
    source = Path(source)
    path = find_checkpoint(source, "best") if source.is_dir() else check_checkpoint(source)
    state_dict = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    weights = {name[len("model.") :]: value for name, value in state_dict.items() if name.startswith("model.")}
    try:
        module.model.load_state_dict(weights)
    except RuntimeError as error:
        message = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise RunDirError(f"init_from={source}: its network does not fit this run's ({message})") from error
    return path


def load_run(
    run_dir: str | Path, ensemble: DictConfig | None = None, checkpoint: str = "best"
) -> tuple[DictConfig, object, MADEModule, Path]:
    """(config, datamodule, module with the trained weights, the checkpoint they came from) of a made-train run.

    ``ensemble``, when given, replaces the run's test-time ensemble config; ``checkpoint``: ``best``, ``last`` or
    a path (see ``find_checkpoint``).
    """
    run_dir = Path(run_dir)
    config_path = RunDir(run_dir).config
    if not config_path.is_file():
        raise RunDirError(f"{run_dir}: no .hydra/config.yaml (is this a made-train run dir?)")
    cfg = _with_current_targets(OmegaConf.load(config_path))
    OmegaConf.update(cfg, "paths.output_dir", str(run_dir), force_add=True)
    _data_dir_it_trained_on(cfg, run_dir)
    if ensemble is not None:
        cfg.ensemble = ensemble
    datamodule = build_datamodule(cfg.data)
    module = build_module(cfg, datamodule.input_dim)
    path = find_checkpoint(run_dir, checkpoint)
    try:
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["state_dict"])
    except (RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as error:
        raise RunDirError(f"{path}: cannot load it into this run's model ({str(error).splitlines()[0]})") from error
    return cfg, datamodule, module, path


def _data_dir_it_trained_on(cfg: DictConfig, run_dir: Path) -> None:
    """Where ``cfg.data.data_dir`` resolves to nothing here (``$MADE_DATA_DIR`` unset in this shell), use the
    directory the run trained from (its ``results.json``) if it still exists, rather than the cache or a download."""
    if "data_dir" not in cfg.data or OmegaConf.select(cfg, "data.data_dir", throw_on_missing=False) is not None:
        return
    try:
        recorded = json.loads(RunDir(run_dir).results.read_text())["config"]["data"].get("data_dir")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # unfinished, or not what made-train wrote
        return
    if recorded and Path(recorded).is_dir():
        cfg.data.data_dir = recorded


def _with_current_targets(cfg: DictConfig) -> DictConfig:
    """``cfg`` with every ``_target_`` of a class that has moved (``_MOVED_TARGETS``) pointing to where it is now."""

    def current(node):
        if isinstance(node, dict):
            return {key: _moved(value) if key == "_target_" else current(value) for key, value in node.items()}
        return [current(item) for item in node] if isinstance(node, list) else node

    return OmegaConf.create(current(OmegaConf.to_container(cfg, resolve=False)))


def _moved(target: str) -> str:
    for old, new in _MOVED_TARGETS.items():
        if target.startswith(old) and target.count(".") == old.count("."):
            return new + target[len(old) :]
    return target
