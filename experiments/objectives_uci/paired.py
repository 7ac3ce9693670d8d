"""Paired differences between training objectives on the UCI sets, from made-compare's results.csv files.

Every row is set against the bank of the same K tested on its uniform mixture (the paper's protocol), seed by seed;
fresh-mask training against the K = 16 bank. The uncertainty of a mean difference combines the spread over seeds
(standard error of the paired differences) with the product of experts' log Z (its standard error per seed, by
importance sampling or AIS, enters the NLL one to one). A difference counts as real ("yes") only where it exceeds
twice that combined uncertainty, and never where log Z cannot be trusted: where AIS's effective sample size is
below ``MIN_AIS_ESS`` of its 1000 chains (a few chains carry the estimate and the delta-method standard error means
little), or where importance sampling and AIS differ by more than three combined standard errors. Both estimates
are biased low, so an untrusted product's NLL is flattered.

    python experiments/objectives_uci/paired.py experiments/objectives_uci/<dataset>/{is,ais,fresh}/results.csv
"""

import csv
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

BASELINE = ("bank, Jensen", "mixture")
MIN_AIS_ESS = 100.0  # of 1000 chains: 10%
FRESH_REFERENCE_K = 16


def read(paths: list[str]) -> dict[tuple[str, str, int, str], dict[int, tuple[float, float, float]]]:
    """(dataset, training, K, strategy) -> seed -> (test NLL, log Z standard error or 0, AIS's ESS or nan)."""
    rows: dict[tuple[str, str, int, str], dict[int, tuple[float, float, float]]] = defaultdict(dict)
    for path in paths:
        folder = Path(path).parent.name  # is, ais (or ais_<settings>) or fresh: made-compare's --out
        ais = folder.startswith("ais")
        with open(path) as lines:
            for row in csv.DictReader(lines):
                fresh_training = row["training"].startswith(("fresh", "mixture objective"))
                if not row["test_nll"] or (ais and row["strategy"] != "poe") or fresh_training != (folder == "fresh"):
                    continue  # fresh-mask runs are scored on 1000 fresh masks, in the fresh/ table only
                strategy = row["strategy"] + (" (AIS)" if ais else " (IS)" if row["strategy"] == "poe" else "")
                key = row["dataset"], row["training"], int(row["num_masks"]), strategy
                ess = float(row.get("effective_sample_size") or "nan")
                rows[key][int(row["seed"])] = float(row["test_nll"]), float(row["log_z_stderr"] or 0.0), ess
    return rows


def paired(values: dict[int, tuple[float, float, float]], baseline: dict[int, tuple[float, float, float]]) -> str:
    seeds = sorted(set(values) & set(baseline))
    if len(seeds) < 2:
        return "— | —"
    differences = [values[s][0] - baseline[s][0] for s in seeds]
    seed_error = statistics.stdev(differences) / math.sqrt(len(seeds))
    log_z_error = math.sqrt(sum(values[s][1] ** 2 + baseline[s][1] ** 2 for s in seeds)) / len(seeds)
    mean, error = statistics.fmean(differences), math.hypot(seed_error, log_z_error)
    return f"{mean:+.3f} ± {error:.3f} | {'yes' if abs(mean) > 2 * error else 'no'}"


def log_z_trusted(rows: dict, key: tuple[str, str, int, str]) -> bool:
    """Whether this row's log Z can be trusted (always, for strategies without one): AIS's mean ESS is at least
    ``MIN_AIS_ESS`` and the IS and AIS estimates agree."""
    if not key[3].startswith("poe ("):
        return True
    estimates = [rows.get((*key[:3], f"poe ({method})"), {}) for method in ("IS", "AIS")]
    seeds = sorted(set(estimates[0]) & set(estimates[1]))
    if not seeds or statistics.fmean(estimates[1][s][2] for s in seeds) < MIN_AIS_ESS:
        return False
    gap = statistics.fmean(estimates[0][s][0] - estimates[1][s][0] for s in seeds)
    error = math.sqrt(sum(estimates[0][s][1] ** 2 + estimates[1][s][1] ** 2 for s in seeds)) / len(seeds)
    return error == 0 or abs(gap) <= 3 * error  # 0: both exact (K = 1), whatever the rounding of two devices


def spread_cells(values: dict[int, tuple[float, float, float]]) -> str:
    """``mean ± std`` of the seeds' test NLLs (std nan with one seed) and the mean log Z standard error."""
    nlls = [nll for nll, _, _ in values.values()]
    spread = statistics.stdev(nlls) if len(nlls) > 1 else math.nan
    stderr = statistics.fmean(error for _, error, _ in values.values())
    return f"{statistics.fmean(nlls):.2f} ± {spread:.2f} | {stderr:.3f}"


def main(paths: list[str]) -> None:
    rows = read(paths)
    print(
        "| dataset | training | K | tested as | test NLL (mean ± std over seeds) | log Z stderr (mean) "
        f"| − bank mixture, same seed and K ({FRESH_REFERENCE_K} for fresh masks) | beyond 2σ |"
    )
    print("|---|---|---:|---|---:|---:|---:|---|")
    for (dataset, training, k, strategy), values in sorted(rows.items()):
        fresh = training.startswith(("fresh", "mixture objective"))
        baseline = rows.get((dataset, BASELINE[0], FRESH_REFERENCE_K if fresh else k, BASELINE[1]), {})
        verdict = paired(values, baseline)
        if not log_z_trusted(rows, (dataset, training, k, strategy)) and not fresh:
            verdict = verdict.rsplit(" | ", 1)[0] + " | log Z untrusted"
        print(f"| {dataset} | {training} | {'—' if fresh else k} | {strategy} | {spread_cells(values)} | {verdict} |")


if __name__ == "__main__":
    main(sys.argv[1:])
