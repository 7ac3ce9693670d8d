"""Finding the records of finished runs (their ``results.json``) and reading what made-report and made-compare need."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from made_exp.errors import UserError
from made_exp.runs.rundir import RESULTS

__all__ = ["ReportError", "RecordError", "read_record", "dataset_name", "results_files", "epoch_rows"]


class ReportError(UserError, ValueError):
    """Input that cannot be reported on; the message names the path."""


class RecordError(ReportError):
    """A run's record (``results.json``, an evaluation) that cannot be read: corrupt or cut short. The message names
    the file; nothing rewrites it."""


def read_record(path: Path) -> dict:
    """The JSON object in the record ``path``; RecordError naming it when it is unreadable or not an object."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordError(f"{path}: unreadable {Path(path).name} ({error}); left as it is") from error
    if not isinstance(record, dict):
        raise RecordError(f"{path}: not a JSON object; left as it is")
    return record


def dataset_name(data: dict) -> str:
    """``data.name``, else the stem of one's own ``data.path``, else the DataModule's class."""
    if data.get("name"):
        return str(data["name"])
    if data.get("path"):
        return Path(data["path"]).stem
    return str(data.get("_target_", "unknown")).rsplit(".", 1)[-1].removesuffix("DataModule").lower()


def results_files(directory: Path) -> list[Path]:
    """Every ``results.json`` under ``directory``, sorted; ReportError when there is none."""
    paths = sorted(Path(directory).rglob(RESULTS)) if Path(directory).is_dir() else []
    if not paths:
        raise ReportError(f"no results.json under {directory}")
    return paths


def epoch_rows(run_dir: Path, metric: str) -> list[dict[str, str]]:
    """The CSV logger's rows of ``run_dir`` that hold ``metric``, one per epoch, in epoch order. A resumed run has a
    log per start (``csv/version_0``, ``version_1``, ...) and repeats the interrupted epoch: the later start's row
    counts."""
    logs = sorted(
        Path(run_dir).glob("csv/version_*/metrics.csv"), key=lambda log: int(log.parent.name.removeprefix("version_"))
    )
    by_epoch: dict[int, dict[str, str]] = {}
    for metrics in logs:
        with open(metrics) as lines:
            by_epoch.update({int(row["epoch"]): row for row in csv.DictReader(lines) if row.get(metric)})
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]
