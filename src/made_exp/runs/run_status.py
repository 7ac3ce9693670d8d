"""Whether a run dir holds a finished run, for the tools that read one (made-eval, made-sample).

A run is ``finished`` once made-train has written its ``results.json``, ``failed`` when a sweep recorded its
``error.json``, and ``unfinished`` otherwise: still training (its checkpoints change under the tool's feet), or
stopped before the end. Its ``best.ckpt`` then holds the best epoch so far, not the run's result.
"""

from __future__ import annotations

import sys
from pathlib import Path

from made_exp.runs.rundir import RunDir

__all__ = ["run_status", "warn_if_unfinished"]


def run_status(run_dir: Path) -> str:
    """``finished``, ``failed`` or ``unfinished`` (see the module's docstring)."""
    run = RunDir(run_dir)
    if run.is_finished():
        return "finished"
    return "failed" if run.error.is_file() else "unfinished"


def warn_if_unfinished(program: str, run_dir: Path, checkpoint: str) -> str:
    """The run's status; for a run that has not finished, one warning line on stderr saying what is read."""
    status = run_status(run_dir)
    if status != "finished":
        print(
            f"{program}: warning: {run_dir} is {status} (no results.json): it may still be training; "
            f"its {checkpoint} checkpoint is the best so far, not the run's result",
            file=sys.stderr,
        )
    return status
