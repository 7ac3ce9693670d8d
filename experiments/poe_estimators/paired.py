"""Each PoE-objective estimator, warm-started from a Jensen bank, against that bank tested as a product, seed by seed.

Both sides are the normalised product of the same K masks, log Z by AIS (1000 chains, 100 temperatures); the
uncertainty of a mean difference combines the seeds' spread with both sides' log Z standard errors, and a
difference counts ("yes") only beyond twice that and where both sides' log Z is trusted (objectives_uci/paired.py's
rule: AIS's mean ESS at least 100 of 1000 chains, and importance sampling agreeing with AIS).

    python experiments/poe_estimators/paired.py experiments/poe_estimators/*/{is,ais}/results.csv > paired.md
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "objectives_uci"))
from paired import log_z_trusted, paired, read, spread_cells  # noqa: E402  (the objectives_uci comparison's own rules)

BANK = "bank, Jensen"
TESTED_AS = "poe (AIS)"


def main(paths: list[str]) -> None:
    rows = read(paths)
    print(
        "| dataset | K | training | test NLL, product by AIS (mean ± std over seeds) | log Z stderr (mean) "
        "| − bank's product, same seed | beyond 2σ |"
    )
    print("|---|---:|---|---:|---:|---:|---|")
    for (dataset, training, k, strategy), values in sorted(
        rows.items(), key=lambda row: (row[0][0], row[0][2], row[0][1])
    ):
        if strategy != TESTED_AS:
            continue
        bank_key = (dataset, BANK, k, TESTED_AS)
        verdict = "—" if training == BANK else paired(values, rows.get(bank_key, {}))
        trusted = log_z_trusted(rows, (dataset, training, k, strategy)) and log_z_trusted(rows, bank_key)
        if training != BANK and not trusted:
            verdict = verdict.rsplit(" | ", 1)[0] + " | log Z untrusted"
        print(f"| {dataset} | {k} | {training} | {spread_cells(values)} | {verdict if training != BANK else '— | —'} |")


if __name__ == "__main__":
    main(sys.argv[1:])
