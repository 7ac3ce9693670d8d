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


def merged_epochs(run: Path) -> tuple[list[str], list[dict]]:
    """(CSV columns, one row per epoch in epoch order) from every CSV log of ``run``."""
    by_epoch, columns = {}, []
    logs = sorted(run.glob("csv/version_*/metrics.csv"), key=lambda log: int(log.parent.name.removeprefix("version_")))
    for metrics in logs:
        with open(metrics) as lines:
            reader = csv.DictReader(lines)
            columns += [name for name in reader.fieldnames or [] if name not in columns]
            by_epoch.update({int(row["epoch"]): row for row in reader if row.get("val/nll")})
    rows = [by_epoch[epoch] for epoch in sorted(by_epoch)]
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
