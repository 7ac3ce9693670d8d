"""The layout of a made-train run directory: the one place that names its files.

    <run dir>/
        .hydra/config.yaml          the composed config (Hydra); overrides.yaml, the command line's overrides
        checkpoints/best.ckpt       the epoch with the best val/nll (tested by made-train and made-eval)
        checkpoints/last.ckpt       the end of the latest epoch (resume= continues from it)
        results.json                metrics, config, seeds, commit, hardware, wall time (a finished run)
        error.json                  why a sweep job failed
        eval_<strategy>.json        made-eval / made-compare under another ensemble strategy (its config's own
                                    values; eval_<strategy>.<8 hex digits>.json under --set KEY=VALUE ones)
        samples.png                 samples drawn after testing
        samples_seed<S>_n<N>.png    made-sample's grids (it never overwrites a file unless told to)
        wandb_id.txt                the W&B run id, so a resumed run continues it
        mlflow_run.json             the MLflow run id and store, likewise
        .resume.lock                host, pid and start of the made-train resuming the run (locked while it runs)

Examples:
    >>> RunDir("logs/run").last_checkpoint.as_posix()
    'logs/run/checkpoints/last.ckpt'
    >>> RunDir("logs/run").evaluation("poe").name
    'eval_poe.json'
    >>> RunDir("logs/run").evaluation("poe", ["log_z_method=ais"]).name
    'eval_poe.5074d228.json'
    >>> RunDir("logs/run").drawn_samples(seed=3, num_samples=16).name
    'samples_seed3_n16.png'
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Sequence
from pathlib import Path

from made_exp.errors import RunDirError

__all__ = ["RunDir", "RESULTS", "check_checkpoint"]

RESULTS = "results.json"


class RunDir:
    """Paths of the files in one run directory (none of them need exist)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config(self) -> Path:
        return self.path / ".hydra" / "config.yaml"

    @property
    def overrides(self) -> Path:
        return self.path / ".hydra" / "overrides.yaml"

    @property
    def hydra_config(self) -> Path:
        return self.path / ".hydra" / "hydra.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def resume_lock(self) -> Path:
        return self.path / ".resume.lock"

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def previous_results(self) -> Path:
        return self.path / "results.previous.json"

    @property
    def error(self) -> Path:
        return self.path / "error.json"

    @property
    def samples(self) -> Path:
        return self.path / "samples.png"

    def drawn_samples(self, seed: int, num_samples: int) -> Path:
        """Where made-sample writes ``num_samples`` samples drawn with ``seed``, beside the training's samples.png."""
        return self.path / f"samples_seed{seed}_n{num_samples}.png"

    @property
    def wandb_id(self) -> Path:
        return self.path / "wandb_id.txt"

    @property
    def mlflow_id(self) -> Path:
        return self.path / "mlflow_run.json"

    def evaluation(self, strategy: str, overrides: Sequence[str] = ()) -> Path:
        """Where made-eval writes the run's metrics under ``strategy`` (a conf/ensemble/ name) with ``KEY=VALUE``
        ``overrides`` of its config: a file per set of overrides (in any order), so that scores under other
        settings (log Z by importance sampling and by AIS, say) are never read for one another."""
        if not overrides:
            return self.path / f"eval_{strategy}.json"
        digest = hashlib.sha256("\n".join(sorted(overrides)).encode()).hexdigest()[:8]
        return self.path / f"eval_{strategy}.{digest}.json"

    def evaluations(self) -> list[Path]:
        """Every ``eval_<strategy>.json`` of the run, sorted."""
        return sorted(self.path.glob("eval_*.json"))

    def is_finished(self) -> bool:
        return self.results.is_file()

    def reopen(self) -> None:
        """A finished run that trains on (``overwrite=true``): its ``results.json`` becomes
        ``results.previous.json``, so that until it finishes again it reads as unfinished (resumable, left out of
        reports) rather than as finished with numbers its checkpoints no longer hold."""
        try:
            self.results.replace(self.previous_results)
        except FileNotFoundError:  # not finished, or another rank of the same run moved it first
            pass


def check_checkpoint(path: Path) -> Path:
    """``path`` if it is a readable checkpoint file (torch's zip format, whole); RunDirError naming it otherwise.

    Cheap: it reads the zip directory at the end of the file, which a write cut short (a killed job) lacks.
    """
    if not Path(path).is_file():
        raise RunDirError(f"{path}: no such checkpoint")
    try:
        with zipfile.ZipFile(path) as archive:
            if not archive.namelist():
                raise zipfile.BadZipFile("no entries")
    except (OSError, zipfile.BadZipFile) as error:
        raise RunDirError(f"{path}: unreadable checkpoint, corrupt or truncated ({error})") from error
    return Path(path)
