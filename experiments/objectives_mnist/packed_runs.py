"""Two chores of run_gpu.sh on a sweep dir of packed runs:

python packed_runs.py epoch <sweep dir>    # prints the last complete epoch of the pack (from last.ckpt)
python packed_runs.py weights <log dir>    # rewrites every best.ckpt below as its weights alone
"""

import sys
from pathlib import Path

import torch


def epoch_reached(sweep: Path) -> int:
    """The most epochs any run of the sweep completed: where the pack's active runs were when it stopped."""
    states = [
        torch.load(path, map_location="cpu", weights_only=False)["packed"]
        for path in sweep.glob("*/checkpoints/last.ckpt")
    ]
    return max(state["epoch"] for state in states)


def keep_weights(root: Path) -> None:
    """best.ckpt -> {state_dict, epoch, global_step}: what made-eval and made-compare load, a third of the size."""
    for path in root.rglob("checkpoints/best.ckpt"):
        state = torch.load(path, map_location="cpu", weights_only=False)
        torch.save({key: state[key] for key in ("state_dict", "epoch", "global_step")}, path)


if __name__ == "__main__":
    command, directory = sys.argv[1], Path(sys.argv[2])
    if command == "epoch":
        print(epoch_reached(directory))
    else:
        keep_weights(directory)
