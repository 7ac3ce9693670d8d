"""Packed sweeps (hydra/launcher=packed): same-shape runs trained as one batched model give every run what it gets
alone: the batched forward and gradients, then whole sweeps through the real CLI against the same sweep run alone."""

import json
import math
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from conftest import random_made
from made_exp.core.ensemble import Mixture
from made_exp.core.made import MADE
from made_exp.core.packed import packed_log_prob, packed_logits, packed_mixture_log_prob, shape_key
from made_exp.lightning.packing import EarlyStop
from test_scaleout import made_train

# 10 minibatches an epoch on a 12-bit synthetic set; a high learning rate and patience 2 make the runs stop early,
# at different epochs
SMALL = [
    "data=synthetic",
    "data.input_dim=12",
    "data.num_train=500",
    "data.num_valid=300",
    "data.num_test=300",
    "data.batch_size=50",
    "model.hidden_sizes=[32]",
    "logger=csv",
    "module.num_samples=0",
    "~callbacks.rich_progress_bar",
    "callbacks.early_stopping.patience=2",
    "trainer.max_epochs=15",
    "optimizer.lr=0.03",
    "model.num_masks=4",
    "masks.val_num_masks=4",
    "ensemble.num_masks=4",
    "hydra.sweep.subdir=${hydra.job.num}",
]
SWEEP = ["seed=0,1,2", "masks=cycle,fresh"]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"hidden_sizes": [16, 12], "direct_connection": "full", "activation": "tanh"},
        {"hidden_sizes": [16], "direct_connection": "output", "condition_on_mask": True},
    ],
)
def test_packed_forward_and_gradients_are_each_members_own(options):
    members = [MADE(input_dim=7, num_masks=3, seed=seed, **{"hidden_sizes": [16], **options}) for seed in range(3)]
    for member, mask in zip(members, [0, 2, 1], strict=True):
        member.set_mask(mask)
        for parameter in member.parameters():  # condition_on_mask's weights start at zero
            parameter.data.normal_(generator=torch.Generator().manual_seed(7))
    x = torch.randint(0, 2, (3, 5, 7), generator=torch.Generator().manual_seed(1)).float()
    packed = packed_log_prob(members, x)
    packed.sum().backward()
    packed_grads = [[p.grad.clone() for p in member.parameters()] for member in members]
    for index, member in enumerate(members):
        member.zero_grad()
        alone = member.log_prob(x[index])
        alone.sum().backward()
        torch.testing.assert_close(packed[index], alone, rtol=1e-5, atol=1e-5)
        for packed_grad, parameter in zip(packed_grads[index], member.parameters(), strict=True):
            torch.testing.assert_close(packed_grad, parameter.grad, rtol=1e-5, atol=1e-5)


def test_packed_forward_refuses_a_batch_that_is_not_one_per_member():
    members = [random_made(5, seed=seed) for seed in range(2)]
    with pytest.raises(ValueError, match=r"\(2, B, D\)"):
        packed_logits(members, torch.zeros(3, 4, 5))
    assert shape_key(members[0]) == shape_key(members[1]) != shape_key(MADE(5, hidden_sizes=[8]))


def test_packed_mixture_is_each_members_uniform_mixture_and_keeps_its_mask():
    members = [random_made(6, num_masks=4, seed=seed) for seed in range(3)]
    x = torch.randint(0, 2, (3, 20, 6), generator=torch.Generator().manual_seed(0)).to(members[0].output.weight)
    ensembles = [Mixture(num_masks=3, mask_source="fresh", seed=seed) for seed in range(3)]
    for member, ensemble in zip(members, ensembles, strict=True):
        ensemble.prepare(member)
        member.set_mask(2)
    packed = packed_mixture_log_prob(members, [e.masks for e in ensembles], x)
    for index, (member, ensemble) in enumerate(zip(members, ensembles, strict=True)):
        torch.testing.assert_close(packed[index], ensemble.log_prob(member, x[index])["log_prob"])
        assert torch.equal(member.current_mask.ordering, member.mask(2).ordering)


def test_early_stopping_follows_lightnings_rules_on_float32_values():
    stop = EarlyStop(patience=2)
    improved = [stop.update(value, epoch) for epoch, value in enumerate([5.0, 4.0, 4.0, 3.9, 3.95, 3.96])]
    assert improved == [True, True, False, True, False, False]
    assert stop.stopped and stop.stopped_epoch == 5 and stop.best_checkpoint_score == pytest.approx(3.9)
    nan = EarlyStop(patience=5)
    nan.update(1.0, 0)
    nan.update(math.nan, 1)
    assert nan.stopped and nan.stopped_epoch == 1
    never = EarlyStop(patience=None)
    assert all(never.update(value, epoch) for epoch, value in enumerate([3.0, 2.0, 1.0])) and not never.stopped


def metrics_rows(run_dir: Path) -> list[dict[str, float]]:
    """Each epoch's train/nll and val/nll from the run's csv log (Lightning writes them on separate rows)."""
    by_epoch: dict[int, dict[str, float]] = {}
    lines = (run_dir / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=True))
        if row.get("test/nll"):
            continue
        for key in ("train/nll", "val/nll"):
            if row[key]:
                by_epoch.setdefault(int(row["epoch"]), {})[key] = float(row[key])
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def run_files(run_dir: Path) -> set[str]:
    return {str(path.relative_to(run_dir)) for path in run_dir.rglob("*") if path.is_file()}


def weights(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return {key: value for key, value in state.items() if torch.is_tensor(value) and value.is_floating_point()}


@pytest.mark.slow
def test_a_packed_sweep_gives_every_run_what_it_gets_alone(tmp_path):
    packed = made_train(
        [
            "-m",
            "hydra/launcher=packed",
            "hydra.launcher.workers=2",
            *SMALL,
            *SWEEP,
            f"hydra.sweep.dir={tmp_path / 'packed'}",
        ],
        tmp_path,
    )
    assert packed.returncode == 0, packed.stdout[-3000:] + packed.stderr[-3000:]
    assert (packed.stdout + packed.stderr).count("packing 3 runs") == 2  # two packs, trained at once
    alone = made_train(["-m", *SMALL, *SWEEP, f"hydra.sweep.dir={tmp_path / 'alone'}"], tmp_path)
    assert alone.returncode == 0, alone.stdout[-3000:] + alone.stderr[-3000:]
    stopped_at = set()
    for job in range(6):
        run, solo = tmp_path / "packed" / str(job), tmp_path / "alone" / str(job)
        assert run_files(run) == run_files(solo)  # results.json, both checkpoints, csv log, train.log, .hydra/
        results, expected = (json.loads((d / "results.json").read_text()) for d in (run, solo))
        assert results["packed_with"] == 3
        assert (results["epochs"], results["stopped_by"]) == (expected["epochs"], expected["stopped_by"])
        stopped_at.add(results["epochs"])
        assert results["metrics"]["val/best_nll"] == pytest.approx(expected["metrics"]["val/best_nll"], abs=1e-5)
        assert results["metrics"]["test/nll"] == pytest.approx(expected["metrics"]["test/nll"], abs=1e-5)
        rows, solo_rows = metrics_rows(run), metrics_rows(solo)
        assert len(rows) == len(solo_rows) == results["epochs"] >= 5  # >= 50 optimiser steps
        for row, solo_row in zip(rows, solo_rows, strict=True):
            assert row == pytest.approx(solo_row, abs=1e-5)
        for name in ("best.ckpt", "last.ckpt"):
            ours, theirs = weights(run / "checkpoints" / name), weights(solo / "checkpoints" / name)
            for key in theirs:
                torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-5)
        assert "epoch 1/15" in (run / "train.log").read_text()
    assert len(stopped_at) >= 3  # early stopping at different epochs, each member's own


@pytest.mark.slow
def test_runs_that_cannot_pack_run_alone_in_the_same_sweep(tmp_path):
    result = made_train(
        [
            "-m",
            "hydra/launcher=packed",
            *SMALL,
            "masks=cycle,poe_objective",
            "trainer.max_epochs=2",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "runs alone (masks.objective=poe" in result.stdout + result.stderr
    packed, alone = (json.loads((tmp_path / "sweep" / str(job) / "results.json").read_text()) for job in (0, 1))
    assert packed["packed_with"] == 1 and "packed_with" not in alone


@pytest.mark.slow
def test_runs_with_different_masks_a_step_train_in_separate_packs(tmp_path):
    """Fresh masks (one a step) and the mixture objective (masks.samples_per_step=4) in one sweep: two packs."""
    result = made_train(
        [
            "-m",
            "hydra/launcher=packed",
            *SMALL,
            "masks=fresh,mixture_objective",
            "seed=0,1",
            "trainer.max_epochs=2",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (result.stdout + result.stderr).count("packing 2 runs") == 2
    for job in range(4):
        assert json.loads((tmp_path / "sweep" / str(job) / "results.json").read_text())["packed_with"] == 2


@pytest.mark.slow
def test_sigterm_stops_a_pack_and_rerunning_the_sweep_continues_it(tmp_path):
    args = [
        "-m",
        "hydra/launcher=packed",
        "hydra.launcher.workers=2",
        *SMALL,
        "callbacks.early_stopping.patience=100",
        "trainer.max_epochs=12",
        "seed=0,1,2",
    ]  # two packs (2 + 1 runs) in two threads
    whole = made_train([*args, f"hydra.sweep.dir={tmp_path / 'whole'}"], tmp_path)
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-3000:]
    sweep = tmp_path / "stopped"
    process = made_train([*args, f"hydra.sweep.dir={sweep}"], tmp_path, wait=False)
    output = sigterm_once(
        process, lambda: all("epoch 3/12" in _text(sweep / str(job) / "train.log") for job in range(3))
    )
    assert f"rerun the sweep with hydra.sweep.dir={sweep}" in output
    assert not any((sweep / str(job) / "results.json").exists() for job in range(3))
    rerun = made_train([*args, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    for job in range(3):
        results, expected = (
            json.loads((d / str(job) / "results.json").read_text()) for d in (sweep, tmp_path / "whole")
        )
        assert results["epochs"] == 12
        assert results["metrics"]["test/nll"] == pytest.approx(expected["metrics"]["test/nll"], abs=1e-6)
        for key, value in weights(tmp_path / "whole" / str(job) / "checkpoints" / "last.ckpt").items():
            torch.testing.assert_close(
                weights(sweep / str(job) / "checkpoints" / "last.ckpt")[key], value, rtol=1e-6, atol=1e-6
            )


@pytest.mark.slow
def test_a_packed_run_resumed_alone_goes_on_as_a_pack_of_one_to_the_uninterrupted_result(tmp_path):
    """A finished packed run capped at 3 epochs, resumed alone to 8 (``made-train resume=<job dir>
    trainer.max_epochs=8 overwrite=true``), stopped by a SIGTERM on the way and resumed again, ends as the 8-epoch
    packed run. Lightning's loop would restart a pack's checkpoint at epoch 0 with its early stopping forgotten."""
    args = [
        "-m",
        "hydra/launcher=packed",
        *SMALL,
        "callbacks.early_stopping.patience=100",
        "seed=0",
        "data.num_train=20000",
    ]  # epochs long enough for a SIGTERM to land in one
    for name, epochs in (("whole", 8), ("capped", 3)):
        swept = made_train([*args, f"trainer.max_epochs={epochs}", f"hydra.sweep.dir={tmp_path / name}"], tmp_path)
        assert swept.returncode == 0, swept.stdout[-3000:] + swept.stderr[-3000:]
    run_dir = tmp_path / "capped" / "0"
    kept = [run_dir / name for name in ("results.json", ".hydra/overrides.yaml", ".hydra/config.yaml")]
    record = [path.read_bytes() for path in kept]
    refused = made_train([f"resume={run_dir}", "trainer.max_time=00:00:10:00", "overwrite=true"], tmp_path)
    assert refused.returncode == 2 and "a pack cannot train it now (trainer.max_time is set)" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert [path.read_bytes() for path in kept] == record  # so resume= still continues the run it was
    process = made_train([f"resume={run_dir}", "trainer.max_epochs=8", "overwrite=true"], tmp_path, wait=False)
    output = sigterm_once(process, lambda: "epoch 5/8" in _text(run_dir / "train.log"))
    assert f"continue with: made-train resume={run_dir}" in output
    assert "continued as a pack of one from epoch 3" in output
    resumed = made_train([f"resume={run_dir}", "overwrite=true"], tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    results, expected = (json.loads((d / "results.json").read_text()) for d in (run_dir, tmp_path / "whole" / "0"))
    assert (results["epochs"], results["packed_with"]) == (8, 1)
    assert results["metrics"]["test/nll"] == pytest.approx(expected["metrics"]["test/nll"], abs=1e-6)
    assert results["metrics"]["val/best_nll"] == pytest.approx(expected["metrics"]["val/best_nll"], abs=1e-6)
    for key, value in weights(tmp_path / "whole" / "0" / "checkpoints" / "last.ckpt").items():
        torch.testing.assert_close(weights(run_dir / "checkpoints" / "last.ckpt")[key], value, rtol=1e-6, atol=1e-6)


def sigterm_once(process, ready) -> str:
    """SIGTERM ``process`` (a made-train) as soon as ``ready()``; its output, after checking it exited with 143."""
    deadline = time.time() + 120
    while not ready():
        assert time.time() < deadline and process.poll() is None, process.communicate()[0][-3000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 143, output[-3000:]
    return output


def _text(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MADE_DATA_DIR") is None, reason="set MADE_DATA_DIR to the paper's data")
def test_an_optuna_batch_of_trials_trains_as_one_pack(tmp_path):
    result = made_train(
        [
            "-m",
            "hydra/sweeper=optuna_tpe",
            "hydra/launcher=packed",
            "data=dna",
            "model.hidden_sizes=[16]",
            "model.num_masks=1",
            "~callbacks.rich_progress_bar",
            "trainer.max_epochs=2",
            "logger=csv",
            "module.num_samples=0",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=4",
            f"hydra.sweep.dir={tmp_path}/search",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "packing 4 runs" in result.stdout + result.stderr
    best = (tmp_path / "search" / "optimization_results.yaml").read_text()
    values = [
        json.loads(path.read_text())["metrics"]["val/best_nll"] for path in (tmp_path / "search").glob("*/results.json")
    ]
    assert len(values) == 4 and f"{min(values)}"[:6] in best
