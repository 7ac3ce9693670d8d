"""Sweeps (``made-train -m``): failure isolation, skipping finished jobs, and the sweep summary.

A job of a multirun runs through ``run_job``: a job whose dir already holds ``results.json``
is skipped (with ``overwrite=true`` it is reopened and continues from its ``last.ckpt``, e.g. to
train on to a larger ``trainer.max_epochs``), an unfinished one continues from its
``checkpoints/last.ckpt``, and one that
raises leaves ``error.json`` and returns NaN (Optuna records the trial as failed) instead of
stopping the sweep; one stopped by SIGTERM (``scancel``) returns NaN and stays incomplete.
``SweepSummary`` (a Hydra callback, ``hydra.callbacks`` in ``conf/train.yaml``) then writes
``sweep_summary.json`` and ``sweep_summary.md`` in the sweep dir, one row per job, and exits with
status 1 if a job failed or is incomplete (a search's pruned trial is neither: it finished early, by design).

Rerun a sweep, skipping what finished; or train every job of it on:
    made-train -m <same overrides> hydra.sweep.dir=logs/train/multiruns/<sweep>
    made-train -m <same overrides> trainer.max_epochs=3000 overwrite=true hydra.sweep.dir=logs/train/multiruns/<sweep>
"""

from __future__ import annotations

import logging
import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from made_exp.errors import STOPPED_BY_SIGTERM, UserError
from made_exp.runs.atomic import WriteError, write_json_atomic, write_text_atomic
from made_exp.runs.ranks import process_rank
from made_exp.runs.records import RecordError, read_record
from made_exp.runs.rundir import RunDir

__all__ = ["run_job", "job_summary", "write_sweep_summary", "SweepSummary"]

log = logging.getLogger(__name__)

SHOWN_METRICS = ("val/best_nll", "test/nll")
PRUNED = "pruned"  # a job's status, and its results.json's stopped_by, when a search's pruner stopped its trial
STATUSES = ("finished", PRUNED, "failed", "incomplete")
DONE = ("finished", PRUNED)  # statuses that do not fail the sweep


def run_job(train: Callable[..., dict], cfg: DictConfig) -> float:
    """Run one sweep job with ``train(cfg, resume_from=...)``; returns its val/best_nll, NaN if it failed."""
    output_dir = Path(cfg.paths.output_dir)
    run = RunDir(output_dir)
    if run.is_finished() and not cfg.get("overwrite", False):
        try:
            metrics = read_record(run.results).get("metrics") or {}
        except RecordError as error:  # left for the person to look at: the summary lists it
            log.error(f"{output_dir.name}: job skipped: {error}")
            return math.nan
        log.info(f"{output_dir.name}: {run.results.name} present, job skipped")
        return metrics.get("val/best_nll", math.nan)
    run.error.unlink(missing_ok=True)  # a rerun replaces the record of an earlier failure
    last = run.last_checkpoint
    try:
        metrics = train(cfg, resume_from=last if last.is_file() else None)["metrics"]
    except SystemExit as stop:  # made-train's exit on a signal (lightning.training._stopped_by_signals)
        if stop.code != STOPPED_BY_SIGTERM:
            raise  # Ctrl-C (130) stops the sweep; so does submitit's exit after requeueing the job
        # scancel: stopped, not failed
        log.warning(f"{output_dir.name} stopped by SIGTERM; rerunning the sweep continues it from {last}")
        return math.nan
    except Exception as error:  # the sweep goes on; KeyboardInterrupt still stops it
        # a user error (a bad value, a diverging run) is its one line; a bug shows where it happened
        detail = f"{type(error).__name__}: {error}" if isinstance(error, UserError) else traceback.format_exc()
        log.error(f"{output_dir.name} failed: {detail}")
        _write_error(output_dir, error)
        return math.nan
    return metrics.get("val/best_nll", math.nan)


def _write_error(output_dir: Path, error: Exception) -> None:
    if process_rank() != 0:
        return
    try:
        write_json_atomic(
            RunDir(output_dir).error,
            {
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exception(error),
            },
        )
    except WriteError as unwritten:  # a full disk: the log says it, and the sweep goes on to its summary
        log.error(str(unwritten))


def job_summary(job_dir: Path, sweep_dir: Path | None = None) -> dict[str, Any]:
    """One job of a sweep: number, overrides, status (finished/pruned/failed/incomplete), metrics or error; its dir
    relative to ``sweep_dir`` when given."""
    run = RunDir(job_dir)
    hydra_cfg = OmegaConf.load(run.hydra_config).hydra
    row: dict[str, Any] = {
        "job": hydra_cfg.job.num,
        "dir": job_dir.relative_to(sweep_dir).as_posix() if sweep_dir is not None else job_dir.name,
        "overrides": list(hydra_cfg.overrides.task),
        "status": "incomplete",
    }
    if run.is_finished():
        try:
            results = read_record(run.results)
        except RecordError as error:
            return {**row, "status": "failed", "error": f"{error} (move it away and rerun to redo the job)"}
        status = PRUNED if results.get("stopped_by") == PRUNED else "finished"
        metrics = results.get("metrics") or {}
        row.update(status=status, metrics={key: metrics[key] for key in SHOWN_METRICS if key in metrics})
    elif run.error.is_file():
        try:
            row.update(status="failed", error=str(read_record(run.error).get("error")))
        except RecordError as error:
            row.update(status="failed", error=str(error))
    return row


def write_sweep_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """Write ``sweep_summary.json`` and ``sweep_summary.md`` for every job dir under ``sweep_dir``, at any depth
    (a sweep run before job dir names were one component has dirs nested by the ``/`` in its override values)."""
    job_dirs = [
        path.parent.parent for path in sweep_dir.glob("**/.hydra/hydra.yaml") if path.parent.parent != sweep_dir
    ]
    jobs = sorted((job_summary(job_dir, sweep_dir) for job_dir in job_dirs), key=lambda row: row["job"])
    counts = {status: sum(row["status"] == status for row in jobs) for status in STATUSES}
    write_json_atomic(sweep_dir / "sweep_summary.json", {"sweep_dir": str(sweep_dir), **counts, "jobs": jobs})
    lines = [
        f"# Sweep {sweep_dir.name}",
        "",
        ", ".join(f"{count} {status}" for status, count in counts.items()),
        "",
        f"| job | status | overrides | {' | '.join(SHOWN_METRICS)} | error |",
        "|---|---|---|" + "---|" * len(SHOWN_METRICS) + "---|",
    ]
    for row in jobs:
        metrics = row.get("metrics", {})
        values = [f"{metrics[key]:.4f}" if key in metrics else "" for key in SHOWN_METRICS]
        error = row.get("error", "").replace("|", "\\|").replace("\n", " ")
        cells = [str(row["job"]), row["status"], " ".join(row["overrides"]), *values, error]
        lines.append(f"| {' | '.join(cells)} |")
    write_text_atomic(sweep_dir / "sweep_summary.md", "\n".join(lines) + "\n")
    return jobs


class SweepSummary(Callback):
    """Hydra callback: after a multirun, summarise its jobs in the sweep dir; exit with status 1 if
    any job failed or is incomplete (Hydra ignores a callback's exceptions, not ``SystemExit``)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        jobs = write_sweep_summary(Path(config.hydra.sweep.dir))
        unfinished = [f"{row['dir']} ({row['status']})" for row in jobs if row["status"] not in DONE]
        if unfinished:
            # after every job ran and the summary is written: the sweep's exit status says it is not all done
            log.error(
                f"{len(unfinished)} of {len(jobs)} jobs did not finish: {', '.join(unfinished)} "
                f"(see {Path(config.hydra.sweep.dir) / 'sweep_summary.md'})"
            )
            sys.exit(1)
