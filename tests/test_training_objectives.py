"""The poe and learned_mixture objectives through made-train: they train, validate on the model they train,
checkpoint (the mixture weights too) and resume to the result of a run never stopped."""

import csv
import logging
import math

import pytest
import torch

from conftest import compose_train
from made_exp.errors import RunDirError
from made_exp.lightning import training as train_module
from made_exp.lightning.loading import build_module, warm_start
from made_exp.lightning.logs import EpochLog

SMALL = [
    "data=synthetic",
    "data.input_dim=8",
    "data.num_train=400",
    "model.hidden_sizes=[32]",
    "model.num_masks=4",
    "logger=csv",
    "module.num_samples=0",
    "~callbacks.rich_progress_bar",
    "trainer.deterministic=true",
]


def train(tmp_path, name: str, overrides: list[str], resume_from=None) -> dict:
    cfg = compose_train([*SMALL, *overrides, f"paths.output_dir={tmp_path / name}"], with_hydra=False)
    return train_module.train(cfg, resume_from=resume_from)


def logged(run_dir, key: str) -> list[float]:
    with open(next(run_dir.glob("csv/version_*/metrics.csv"))) as metrics:
        return [float(row[key]) for row in csv.DictReader(metrics) if row.get(key)]


@pytest.mark.parametrize(
    "objective,extra",
    [
        ("poe", []),
        ("poe", ["masks.log_z=importance"]),
        ("poe", ["masks.log_z=smc", "masks.log_z_samples=100"]),
        ("poe", ["masks.log_z=nce"]),
        ("learned_mixture", []),
    ],
)
def test_the_objective_trains_checkpoints_and_resumes_to_the_uninterrupted_result(tmp_path, objective, extra):
    overrides = [f"masks={objective}_objective", *extra]
    whole = train(tmp_path, "whole", [*overrides, "trainer.max_epochs=4"])
    train(tmp_path, "stopped", [*overrides, "trainer.max_epochs=2"])
    resumed = train(
        tmp_path,
        "stopped",
        [*overrides, "trainer.max_epochs=4"],
        resume_from=tmp_path / "stopped" / "checkpoints" / "last.ckpt",
    )
    assert resumed["metrics"]["test/nll"] == whole["metrics"]["test/nll"]
    assert resumed["metrics"]["val/best_nll"] == whole["metrics"]["val/best_nll"]
    state = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    if objective == "poe":
        assert len(logged(tmp_path / "whole", "train/log_z")) == 4
        assert whole["metrics"]["test/ensemble/log_z_stderr"] == 0.0  # D = 8: exact
        assert "mixture_weights.logits" not in state
        estimator = extra[0].split("=")[1] if extra else "exact"
        assert whole["log_z_estimator"]["method"] == estimator
        assert ("log_z_estimator.particles" in state) == (estimator == "smc")
        assert ("log_z_estimator.raw_log_z" in state) == (estimator == "nce")
    else:
        assert not torch.equal(state["mixture_weights.logits"], torch.zeros(4))  # the weights were trained
        assert 1.0 <= whole["metrics"]["test/ensemble/effective_num_masks"] < 4.0


def test_poe_training_lowers_the_normalised_product_nll_below_jensen_training(tmp_path):
    """Same steps and seeds: the objective that is the tested model's NLL scores better on it (training NLL)."""
    jensen = train(tmp_path, "jensen", ["masks=cycle", "ensemble=poe", "trainer.max_epochs=6"])
    poe = train(tmp_path, "poe", ["masks=poe_objective", "trainer.max_epochs=6"])
    assert poe["metrics"]["test/nll"] < jensen["metrics"]["test/nll"]


def test_the_epoch_line_shows_the_sampled_log_z_and_warns_once_when_its_ess_collapses(tmp_path, caplog):
    """The line says DEGRADED on every such epoch, the warning comes once, and results.json lists the epochs."""
    with caplog.at_level(logging.INFO, logger="made_exp"):
        train(tmp_path, "poe", ["masks=poe_objective", "masks.log_z=importance", "trainer.max_epochs=2"])
    epoch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 2/2")]
    assert len(epoch_lines) == 1 and "log Z " in epoch_lines[0] and "ESS " in epoch_lines[0], epoch_lines
    caplog.clear()
    epoch_log = EpochLog()
    metrics = {"train/log_z": -9.3, "train/log_z_stderr": 0.6}
    with caplog.at_level(logging.WARNING, logger="made_exp"):
        healthy = epoch_log._log_z_part({**metrics, "train/effective_sample_fraction": 0.6}, epoch=1)
        for epoch in (2, 3):
            epoch_log._log_z_part({**metrics, "train/effective_sample_fraction": 0.018}, epoch=epoch)
    assert healthy == "log Z -9.30 ± 0.60  ESS 60.0%"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("epoch 2: the training log Z estimator degraded (importance weights: ESS 1.8%")


def test_a_degraded_estimator_is_named_in_the_epoch_line_and_in_results(tmp_path, caplog, monkeypatch):
    """Every epoch whose estimator degraded is in results.json's log_z_estimator.degraded_epochs, with why."""
    monkeypatch.setattr("made_exp.core.objectives.MAX_CLASSIFIER_ACCURACY", 0.0)  # every nce epoch degrades
    with caplog.at_level(logging.INFO, logger="made_exp"):
        results = train(tmp_path, "nce", ["masks=poe_objective", "masks.log_z=nce", "trainer.max_epochs=2"])
    degraded = results["log_z_estimator"]["degraded_epochs"]
    assert [entry["epoch"] for entry in degraded] == [1, 2]
    assert degraded[0]["why"].startswith("noise too far: the classifier is right on")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 2/2")]
    assert "NCE acc" in lines[0] and "DEGRADED: noise too far" in lines[0], lines


def test_init_from_starts_a_run_from_another_runs_network(tmp_path):
    """A PoE-objective run warm-started from a Jensen bank begins with the bank's best weights, mask bank included;
    a network of another shape is refused in one line."""
    train(tmp_path, "bank", ["masks=cycle", "trainer.max_epochs=2"])
    bank = torch.load(tmp_path / "bank" / "checkpoints" / "best.ckpt", weights_only=False)["state_dict"]
    cfg = compose_train([*SMALL, "masks=poe_objective", "masks.log_z=nce"], with_hydra=False)
    module = build_module(cfg, input_dim=8)
    assert warm_start(module, tmp_path / "bank") == tmp_path / "bank" / "checkpoints" / "best.ckpt"
    for name, value in module.model.state_dict().items():
        if name.endswith(".mask"):  # the current mask, which every step sets from the bank
            continue
        saved = bank[f"model.{name}"]
        if isinstance(value, dict):  # the mask generator's state
            value, saved = value["generator_state"], saved["generator_state"]
        assert torch.equal(value, saved), name
    other = build_module(compose_train([*SMALL, "model.num_masks=2"], with_hydra=False), input_dim=8)
    with pytest.raises(RunDirError, match=r"init_from=.*bank: its network does not fit this run's \(") as error:
        warm_start(other, tmp_path / "bank")
    assert "\n" not in str(error.value)
    warm = train(
        tmp_path,
        "warm",
        ["masks=poe_objective", "masks.log_z=nce", "trainer.max_epochs=1", f"init_from={tmp_path / 'bank'}"],
    )
    assert warm["config"]["init_from"] == str(tmp_path / "bank")


def test_validation_can_score_the_product_with_ais(tmp_path):
    """masks.val_log_z=ais: every epoch's val/nll takes log Z from AIS with the masks.val_ais_* settings."""
    cfg = compose_train([*SMALL, "masks=poe_objective", "masks.val_log_z=ais", "masks.val_ais_chains=30"], False)
    validation = build_module(cfg, input_dim=8).validation_ensemble
    assert (validation.log_z_method, validation.ais_chains, validation.ais_temperatures) == ("ais", 30, 50)
    results = train(tmp_path, "ais", ["masks=poe_objective", "masks.val_log_z=ais", "trainer.max_epochs=1"])
    assert math.isfinite(results["metrics"]["val/best_nll"])
