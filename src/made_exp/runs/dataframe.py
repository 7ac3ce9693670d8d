"""Every made-train run under a directory as one row of a pandas DataFrame: its config, metrics and evaluations.

A run is a directory holding ``results.json`` (finished), ``error.json`` (a sweep job that failed) or ``.hydra/``
(Hydra's record of a run that started): single runs, the jobs of sweeps, Optuna searches and packed sweeps alike
(``made_exp.runs.rundir`` names the files).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from made_exp.runs.config import TrainSchema
from made_exp.runs.records import RecordError, ReportError, read_record
from made_exp.runs.rundir import RESULTS, RunDir

if TYPE_CHECKING:
    import pandas

__all__ = ["load_runs", "config_columns", "stopped_by", "STATUSES", "PROTOCOL_END"]

STATUSES = ("finished", "unfinished", "failed", "corrupt")
PROTOCOL_END = "early_stopping"  # the paper trains until early stopping (look-ahead) fires
LEADING = ["run_dir", "status", "error"]
# results.json's keys that are neither the config nor the metrics, in the order they become columns
RECORDS = ["epochs", "wall_time_s", "git_commit", "made_exp_version", "best_checkpoint"]
CONFIG_TOP_LEVEL = frozenset(field.name for field in fields(TrainSchema))


def load_runs(path: str | Path) -> pandas.DataFrame:
    """One row per made-train run found under ``path`` (recursively), sorted by run dir. Columns:

    - ``run_dir`` (str); ``status``: ``finished`` (it has ``results.json``), ``failed`` (``error.json``, whose
      message is ``error``), ``unfinished`` (still running, stopped, or killed) or ``corrupt`` (a ``results.json``
      that cannot be read; ``error`` says why, and a warning names it);
    - the resolved config flattened to dotted names (``data.name``, ``model.hidden_sizes``, ``optimizer.lr``,
      ``seed``, ``seeds.init``, ...; lists as tuples, so that columns can be grouped on); an unfinished run's
      comes from ``.hydra/config.yaml``, with any interpolation that cannot be resolved there left as written;
    - the metrics under their ``results.json`` names (``test/nll``, ``val/best_nll``, ...);
    - ``epochs``, ``stopped_by`` (what ended training; inferred from the config for results that predate it,
      see ``stopped_by``), ``wall_time_s``, ``git_commit``, ``made_exp_version``, ``best_checkpoint``,
      ``per_mask_nll`` (a tuple, nats) and ``hardware.*``;
    - every made-eval / made-compare evaluation beside the run as ``eval/<ensemble>/<metric>``, e.g.
      ``eval/poe/test/nll``, and ``eval/<ensemble>/per_mask_nll``; one made with ``--set`` overrides as
      ``eval/poe[log_z_method=ais]/test/nll``.

    ReportError when ``path`` holds no run. The examples read the runs committed under ``experiments/paper/results``
    (from the repository's root).

    Examples:
        >>> from made_exp.runs import load_runs
        >>> runs = load_runs("experiments/paper/results")
        >>> len(runs), runs.status.unique().tolist()
        (117, ['finished'])
        >>> nll = runs.groupby("data.name")["test/nll"]
        >>> nll.agg(["min", "count"]).round(2)  # doctest: +NORMALIZE_WHITESPACE
                            min  count
        data.name
        adult             13.11     19
        binarized_mnist   88.87      3
        connect4          11.85     17
        dna               80.04     17
        mushrooms          9.62     21
        nips             277.11     28
        ocr_letters       28.21     12
        >>> adult = runs[runs["data.name"] == "adult"]
        >>> by_masks = adult.groupby(["model.num_masks", "masks.schedule"])["test/nll"]
        >>> by_masks.mean().round(2)  # doctest: +NORMALIZE_WHITESPACE
        model.num_masks  masks.schedule
        1                cycle             13.28
                         fresh             17.40
        8                cycle             13.12
        32               cycle             13.21
        Name: test/nll, dtype: float64
    """
    import pandas

    rows = [_row(run_dir) for run_dir in run_dirs(path)]
    if not rows:
        raise ReportError(f"no made-train run under {path} (no results.json, error.json or .hydra/)")
    frame = pandas.DataFrame(rows, dtype=object)
    frame = frame.reindex(columns=LEADING + [column for column in frame.columns if column not in LEADING])
    for column in frame.columns:  # whole numbers stay whole where some runs lack the key (a nullable Int64)
        present = [value for value in frame[column] if value is not None and value == value]
        whole = all(isinstance(value, int) and not isinstance(value, bool) for value in present)
        if present and whole and len(present) < len(frame):
            frame[column] = frame[column].astype("Int64")
    return frame.infer_objects()


def run_dirs(path: str | Path) -> list[Path]:
    """Every run dir under ``path`` (``path`` itself included), sorted."""
    root = Path(path)
    if not root.is_dir():
        return []
    records = {found.parent for name in (RESULTS, RunDir(".").error.name) for found in root.rglob(name)}
    started = {found.parent for found in root.rglob(".hydra") if found.is_dir()}
    return sorted(records | started)


def config_columns(frame: pandas.DataFrame) -> list[str]:
    """The columns of ``frame`` (from ``load_runs``) that hold the run's config."""
    return [column for column in frame.columns if column.split(".", 1)[0] in CONFIG_TOP_LEVEL]


def stopped_by(results: dict) -> str:
    """What ended training: ``results["stopped_by"]`` where made-train recorded it, else inferred from the
    config and ``epochs``: no early-stopping callback; ``max_epochs`` if the epochs reached the cap (early
    stopping in the last epoch looks the same, and counts as the cap); ``max_time`` if a time cap was set
    (it may not have been reached: the label errs towards warning); otherwise early stopping."""
    if results.get("stopped_by"):
        return str(results["stopped_by"])
    config, epochs = results.get("config", {}), results.get("epochs")
    trainer = config.get("trainer") or {}
    if isinstance(config.get("callbacks"), dict) and "early_stopping" not in config["callbacks"]:
        return "no_early_stopping"
    if epochs is not None and trainer.get("max_epochs") is not None and epochs >= trainer["max_epochs"]:
        return "max_epochs"
    if trainer.get("max_time"):
        return "max_time"
    return PROTOCOL_END


def _row(run_dir: Path) -> dict[str, Any]:
    run = RunDir(run_dir)
    row: dict[str, Any] = {"run_dir": str(run_dir)}
    if run.results.is_file():
        try:
            results = _results(run.results)
        except ReportError as error:
            warnings.warn(str(error), stacklevel=3)
            return {**row, "status": "corrupt", "error": str(error), **_saved_config(run)}
        row.update(status="finished", **_flatten(results["config"]), **results["metrics"])
        row.update(stopped_by=stopped_by(results), **{key: results.get(key) for key in RECORDS})
        row.update(per_mask_nll=tuple(results.get("per_mask_nll") or ()))
        row.update(_flatten(results.get("hardware") or {}, "hardware."))
        row.update(_evaluations(run))
        return row
    if run.error.is_file():
        return {**row, "status": "failed", "error": _error_message(run.error), **_saved_config(run)}
    return {**row, "status": "unfinished", **_saved_config(run)}


def _results(path: Path) -> dict:
    """A made-train ``results.json``; ReportError naming ``path`` if it is unreadable or not one."""
    results = read_record(path)
    if not all(isinstance(results.get(key), dict) for key in ("config", "metrics")):
        raise ReportError(f"{path} has no 'config' and 'metrics': not a made-train results.json")
    return results


def _error_message(path: Path) -> str:
    try:
        return str(read_record(path)["error"])
    except KeyError as error:
        return f"{path}: unreadable ({error})"
    except RecordError as error:
        return str(error)


def _saved_config(run: RunDir) -> dict[str, Any]:
    """The run's ``.hydra/config.yaml`` flattened; interpolations that do not resolve outside Hydra (``${hydra:..}``)
    stay as written."""
    if not run.config.is_file():
        return {}
    try:
        config = OmegaConf.load(run.config)
    except (OSError, OmegaConfBaseException, ValueError):
        return {}
    return _flatten(_resolved(config))


def _resolved(node: Any) -> Any:
    if isinstance(node, DictConfig):
        return {key: _resolved(_value(node, key)) for key in node.keys()}
    if isinstance(node, ListConfig):
        return [_resolved(_value(node, index)) for index in range(len(node))]
    return node


def _value(node: DictConfig | ListConfig, key: Any) -> Any:
    try:
        return node[key]
    except OmegaConfBaseException:
        return node._get_node(key)._value()


def _evaluations(run: RunDir) -> dict[str, Any]:
    """``eval/<ensemble>[<overrides>]/<metric>`` of every ``eval_*.json`` beside the run (an older file that does
    not record its overrides: ``eval/<ensemble>.<hash>/<metric>``, its file name's)."""
    columns: dict[str, Any] = {}
    for path in run.evaluations():
        strategy, _, digest = path.stem.removeprefix("eval_").partition(".")
        try:
            evaluation = read_record(path)
            overrides = evaluation.get("overrides")
            name = strategy + (f"[{','.join(overrides)}]" if overrides else f".{digest}" if digest else "")
            columns.update({f"eval/{name}/{metric}": value for metric, value in evaluation["metrics"].items()})
            columns[f"eval/{name}/per_mask_nll"] = tuple(evaluation.get("per_mask_nll") or ())
        except (RecordError, KeyError, TypeError) as error:
            warnings.warn(f"{path}: unreadable evaluation ({error!r}), left out", stacklevel=4)
    return columns


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys; lists as tuples (hashable, so they can be grouped on)."""
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: _hashable(node)}


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value
