"""Paired differences between training objectives, seed by seed, from made-compare's results.csv files.

The synthetic set is drawn from the run's seed (data.seed), so the three seeds are three different
distributions: the spread over seeds of a test NLL mixes the data with the training. Differences taken
within a seed (same data, same test masks' seed) remove the first part.

    python experiments/objectives_synthetic/paired.py experiments/objectives_synthetic/{banks,fresh}/results.csv
"""

import csv
import statistics
import sys
from collections import defaultdict

from made_exp.data.datamodules import SyntheticDataModule

BASELINE = ("bank, Jensen", "mixture")  # the paper's protocol: a bank of K masks, tested on their mixture
FRESH_REFERENCE_K = 16  # runs trained on fresh masks (K does not apply) are set against the largest bank


def main(paths: list[str]) -> None:
    nll: dict[tuple[str, int, str], dict[int, float]] = defaultdict(dict)
    for path in paths:
        with open(path) as rows:
            for row in csv.DictReader(rows):
                if row["test_nll"]:
                    key = row["training"], int(row["num_masks"]), row["strategy"]
                    nll[key][int(row["seed"])] = float(row["test_nll"])
    seeds = sorted({seed for values in nll.values() for seed in values})
    entropy = {
        seed: SyntheticDataModule(input_dim=12, num_train=2000, num_valid=1000, num_test=5000, seed=seed).entropy()
        for seed in seeds
    }
    print(
        "| training | K | test strategy | test NLL − entropy (mean ± std over seeds) "
        f"| − bank mixture, same seed and K ({FRESH_REFERENCE_K} for fresh-mask training) |"
    )
    print("|---|---:|---|---:|---:|")
    for (training, k, strategy), values in sorted(nll.items()):
        gaps = [values[s] - entropy[s] for s in values]
        fresh = training.startswith(("fresh", "mixture objective"))
        baseline = nll.get((BASELINE[0], FRESH_REFERENCE_K if fresh else k, BASELINE[1]))
        paired = [values[s] - baseline[s] for s in values if baseline and s in baseline]
        paired_text = f"{statistics.fmean(paired):+.3f} ± {statistics.stdev(paired):.3f}" if len(paired) > 1 else "—"
        print(
            f"| {training} | {k} | {strategy} | {statistics.fmean(gaps):.3f} ± {statistics.stdev(gaps):.3f} "
            f"| {paired_text} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
