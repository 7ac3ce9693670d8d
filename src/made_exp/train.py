"""``made-train``: compose the config, fit, test with the ensemble, write ``results.json``.

Usage:
    made-train data=dna masks=fresh optimizer=adagrad
    made-train -m model.num_masks=1,2,4,8 seed=0,1,2
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from made_exp.config import ConfigError, register_configs, validate_config
from made_exp.data import DataError
from made_exp.results import run_metadata, write_json_atomic

__all__ = ["train", "main"]

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def build_loggers(cfg: DictConfig) -> list:
    return [instantiate(node) for node in (cfg.get("logger") or {}).values()]


def build_callbacks(cfg: DictConfig) -> list:
    return [instantiate(node) for node in (cfg.get("callbacks") or {}).values()]


def train(cfg: DictConfig) -> dict:
    """Fit and test one configuration; returns (and writes) the results dict."""
    validate_config(cfg)
    started = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")  # read and validate the data before anything is written
    model = instantiate(cfg.model, input_dim=datamodule.input_dim)
    module = instantiate(
        cfg.module,
        model=model,
        optimizer=instantiate(cfg.optimizer),
        masks=instantiate(cfg.masks),
        ensemble=instantiate(cfg.ensemble),
    )
    loggers = build_loggers(cfg)
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=build_callbacks(cfg))
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    try:
        trainer.fit(module, datamodule=datamodule)
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
        trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
        results = {
            "metrics": {**_best_validation(trainer), **module.test_results},
            "epochs": trainer.current_epoch,
            "best_checkpoint": best,
            **run_metadata(cfg, wall_time_s=time.perf_counter() - started),
        }
        if trainer.is_global_zero:
            samples = module.sample_grid(output_dir / "samples.png")
            if samples is not None:
                for logger in loggers:
                    if hasattr(logger, "log_image"):
                        logger.log_image(key="samples", images=[str(samples)])
            write_json_atomic(output_dir / "results.json", results)
            _print_summary(results)
        return results
    finally:
        _finish_wandb()


def _best_validation(trainer: pl.Trainer) -> dict[str, float]:
    checkpoint = trainer.checkpoint_callback
    if checkpoint is None or checkpoint.best_model_score is None:
        return {}
    return {"val/best_nll": float(checkpoint.best_model_score)}


def _print_summary(results: dict) -> None:
    metrics = results["metrics"]
    shown = {key: value for key, value in metrics.items() if key.startswith("test/") and "ensemble" not in key}
    lines = [f"  {key:<32} {value:.4f}" for key, value in sorted(shown.items())]
    print("Test results (nats per example; bpd = bits per dimension):\n" + "\n".join(lines))


def _finish_wandb() -> None:
    """Close the W&B run so the next job of a multirun starts its own."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


USER_ERRORS = (ConfigError, DataError)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)["metrics"]
    except USER_ERRORS as error:
        if HydraConfig.get().mode == RunMode.MULTIRUN or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise  # a sweep records the failed job and goes on; HYDRA_FULL_ERROR shows the traceback
        _remove_if_unused(Path(cfg.paths.output_dir))
        print(f"made-train: error: {error}", file=sys.stderr)
        sys.exit(2)
    return metrics.get("val/best_nll")  # what a sweeper (e.g. Optuna) minimises


def _remove_if_unused(run_dir: Path) -> None:
    """Delete a run dir that holds only what Hydra wrote before the run failed on bad input."""
    hydra_only = {".hydra", "train.log"}
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= hydra_only:
        shutil.rmtree(run_dir)


def main() -> None:
    register_configs()
    os.environ.setdefault("WANDB_MODE", "offline")
    _hydra_main()


if __name__ == "__main__":
    main()
