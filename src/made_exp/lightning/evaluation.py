"""Scoring a finished run's best checkpoint under a test-time ensemble, through Lightning's test loop."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch

from made_exp.errors import STOPPED_BY_SIGTERM, UserError
from made_exp.lightning.loading import checkpoint_digest, load_run
from made_exp.lightning.logs import quiet_lightning
from made_exp.runs.config import compose_ensemble
from made_exp.runs.provenance import git_commit
from made_exp.runs.results import run_metadata
from made_exp.runs.run_status import run_status

__all__ = ["evaluate"]


def evaluate(
    run_dir: str | Path,
    ensemble: str = "mixture",
    overrides: list[str] | None = None,
    checkpoint: str = "best",
    accelerator: str = "auto",
) -> dict:
    """Test metrics of the run's ``checkpoint`` (best, last or a path) under ``ensemble`` (a conf/ensemble/ name,
    with ``KEY=VALUE`` ``overrides`` of its keys, recorded too): what made-eval writes to ``RunDir.evaluation``.
    ``accelerator``: Lightning's (``auto`` takes a GPU where there is one); the device used is recorded as
    ``device``, the run's ``run_status`` (``runs.run_status``), and the weights scored as ``weights_sha256``
    (``loading.checkpoint_digest``). Masks, samples and AIS noise come from the same CPU generators on either
    device, so a GPU's scores differ from the CPU's by float rounding alone."""
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise UserError("--accelerator gpu: this machine has no GPU that torch can use (torch.cuda.is_available())")
    started, commit = time.perf_counter(), git_commit()
    quiet_lightning()
    cfg, datamodule, module, path = load_run(run_dir, compose_ensemble(ensemble, overrides or []), checkpoint)
    weights = checkpoint_digest(path)
    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    with _stopped_by_sigterm():
        trainer.test(module, datamodule=datamodule, verbose=False)
    return {
        "metrics": module.test_results,
        "per_mask_nll": module.per_mask_nll,
        "ensemble": ensemble,
        "overrides": list(overrides or []),
        "checkpoint": str(path),
        "weights_sha256": weights,
        "device": trainer.strategy.root_device.type,
        "run_status": run_status(Path(run_dir)),  # unfinished: the scores are of its best epoch so far
        **run_metadata(cfg, wall_time_s=time.perf_counter() - started, commit=commit),
    }


@contextlib.contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """A SIGTERM (a scheduler's warning before it kills) ends the process at once with status 143. Lightning only
    flags one during a test, which can run for minutes (AIS), and then goes on. Nothing of this evaluation is written;
    those already written stay (they are written whole). Only the main thread can take signals: elsewhere, as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(number: int, frame: object) -> None:
        print(f"{Path(sys.argv[0]).name}: stopped by SIGTERM; the evaluations written so far are kept", file=sys.stderr)
        raise SystemExit(STOPPED_BY_SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop)  # Lightning calls it after setting its own flag
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
