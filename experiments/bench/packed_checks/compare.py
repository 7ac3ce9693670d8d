"""Packed against the basic launcher on real sweeps, run by run, as a markdown table:

python experiments/bench/packed_checks/compare.py <the dir run.sh wrote into>
"""

import json
import re
import sys
from pathlib import Path

SWEEPS = {  # sweep dir prefix: (log prefix, label)
    "g3": ("grid", "experiment=grid_uci data=dna (16 runs: 2 hidden sizes x 4 learning rates x one mask or fresh)"),
    "d3": ("dna", "experiment=paper_dna seed=0,1,2 (fresh masks, Adadelta, validated on 300 masks, tested on 1000)"),
}


def row(root: Path, name: str, log: str, label: str) -> str:
    worst = {"val/best_nll": 0.0, "test/nll": 0.0}
    packs = set()
    runs = sorted((root / f"{name}_packed").glob("*/results.json"))
    for packed in runs:
        a = json.loads(packed.read_text())
        b = json.loads((root / f"{name}_basic" / packed.parent.name / "results.json").read_text())
        assert a["epochs"] == b["epochs"], (packed, a["epochs"], b["epochs"])
        for key in worst:
            worst[key] = max(worst[key], abs(a["metrics"][key] - b["metrics"][key]))
        packs.add(a["packed_with"])
    seconds = [
        re.search(rf" {launcher} ([0-9.]+) s", (root / f"{log}_{launcher}.log").read_text()).group(1)
        for launcher in ("packed", "basic")
    ]
    return (
        f"| {label} | {len(runs)} | {sorted(packs)} | {worst['val/best_nll']:.2e} | {worst['test/nll']:.2e} "
        f"| {seconds[0]} s / {seconds[1]} s |"
    )


def main(root: Path) -> None:
    print(
        "| sweep, 3 epochs a run | runs | runs a pack | largest difference in val/best_nll | in test/nll "
        "| wall time packed / basic |"
    )
    print("|---|---:|---|---:|---:|---:|")
    for name, (log, label) in SWEEPS.items():
        print(row(root, name, log, label))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
