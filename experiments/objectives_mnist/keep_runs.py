"""Keep what the report needs of each run dir: ``results.json`` and one ``metrics.csv`` with a row per epoch.

    python experiments/objectives_mnist/keep_runs.py <out dir> <name>=<run dir> ...

A continued run has a CSV log per start (``csv/version_0``, ``version_1``, ...); the rows of all of them are merged
by epoch, a later start's row replacing an earlier one's; rows without ``val/nll`` (the test's) and columns
empty in every kept row are left out.
"""

import csv
import shutil
import sys
from pathlib import Path

from made_exp.runs.records import epoch_rows


def merged_epochs(run: Path) -> tuple[list[str], list[dict]]:
    """(CSV columns, one row per epoch in epoch order) from every CSV log of ``run``."""
    rows = epoch_rows(run, "val/nll")
    columns = list(dict.fromkeys(name for row in rows for name in row))
    return [name for name in columns if any(row.get(name) for row in rows)], rows


def keep(run: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "results.json", out / "results.json")
    columns, rows = merged_epochs(run)
    with open(out / "metrics.csv", "w", newline="") as lines:
        writer = csv.DictWriter(lines, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    target = Path(sys.argv[1])
    for pair in sys.argv[2:]:
        name, run = pair.split("=", 1)
        keep(Path(run), target / name)
