"""The mixture_vs_poe sweep composes, and made-compare scores a tiny sweep under every strategy."""

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import compose_train
from made_exp.cli.compare import METRICS, STRATEGIES, compare, main, parse_overrides, summarise, training_label
from made_exp.lightning.evaluation import evaluate
from made_exp.lightning.loading import checkpoint_digest
from made_exp.runs.config import validate_config

BIN = Path(sys.executable).parent


def test_experiment_sweeps_k_and_datasets_over_a_cycled_bank():
    cfg = compose_train(["experiment=mixture_vs_poe"])
    validate_config(cfg)
    assert cfg.masks.schedule == "cycle" and list(cfg.model.hidden_sizes) == [500]
    params = cfg.hydra.sweeper.params
    swept = {
        o.key_or_group: o.sweep_string_iterator()
        for o in OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    }
    assert [int(k) for k in swept["model.num_masks"]] == [1, 2, 4, 8, 16, 32, 64]
    assert list(swept["data"]) == ["dna", "mushrooms", "nips", "binarized_mnist"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> tuple[Path, Path, str]:
    """Two tiny runs (K = 1, 2) on the synthetic data, then made-compare over them; returns what it printed."""
    root = tmp_path_factory.mktemp("compare")
    sweep, out = root / "sweep", root / "out"
    env = {**os.environ, "MADE_LOG_DIR": str(root / "logs"), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    trained = subprocess.run(
        [
            str(BIN / "made-train"),
            "-m",
            "data=synthetic",
            "masks=cycle",
            "model.num_masks=1,2",
            "model.hidden_sizes=[16]",
            "trainer=debug",
            "logger=none",
            "module.num_samples=0",
            f"hydra.sweep.dir={sweep}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main([str(sweep), "--out", str(out)])  # in-process: one interpreter start less
    return sweep, out, printed.getvalue()


def test_compare_tables_every_strategy_and_marks_logit_average_unnormalised(compared):
    sweep, out, printed = compared
    header = printed.splitlines()[0]
    for label in [
        "mixture",
        "learned mixture",
        "best single mask",
        "product of experts",
        "PoE unnormalised",
        "PoE log Z",
        "eff. masks",
        "logit average (unnormalised)",
    ]:
        assert label in header
    assert "NOT a normalised distribution" in (out / "report.md").read_text()
    assert (out / "nll_vs_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for run_dir in (p.parent for p in sweep.rglob("results.json")):
        assert {p.name for p in run_dir.glob("eval_*.json")} == {f"eval_{s}.json" for s in STRATEGIES}


def test_compare_numbers_obey_what_the_maths_says(compared):
    _, out, _ = compared
    rows = {(int(r["num_masks"]), r["strategy"]): r for r in csv.DictReader((out / "results.csv").open())}
    assert len(rows) == 2 * len(STRATEGIES)
    assert rows[2, "logit_average"]["test_nll"] == "" and float(rows[2, "logit_average"]["unnormalised_nll"]) > 0
    one = rows[1, "mixture"]
    # one expert: its product is itself, so log Z = 0 (exact enumeration, D = 10)
    assert float(rows[1, "poe"]["log_z"]) == pytest.approx(0.0, abs=1e-5)
    assert float(rows[1, "poe"]["test_nll"]) == pytest.approx(float(one["test_nll"]), abs=1e-4)
    two = rows[2, "mixture"]
    assert float(two["test_nll"]) <= float(two["single_mask_nll_mean"]) + 1e-9  # Jensen
    assert float(rows[2, "poe"]["log_z"]) <= 1e-6  # Z <= 1 by AM-GM


def test_compare_reuses_existing_evaluations(compared, tmp_path):
    sweep, _, _ = compared
    evaluations = sorted(sweep.rglob("eval_*.json"))
    before = [p.stat().st_mtime_ns for p in evaluations]
    compare(sweep, tmp_path)
    assert [p.stat().st_mtime_ns for p in evaluations] == before
    assert (tmp_path / "report.md").is_file() and (tmp_path / "results.csv").is_file()


def test_compare_scores_again_a_run_whose_weights_changed_or_whose_evaluation_does_not_say(compared, tmp_path):
    """A run trained on after it was scored (its best.ckpt holds other weights) is scored again, as is one whose
    evaluation predates the weights record; the others are reused, and a copy elsewhere still counts as the same."""
    runs = tmp_path / "sweep"
    shutil.copytree(compared[0], runs)
    trained_on, legacy = sorted(p.parent for p in runs.rglob("results.json"))
    checkpoint = trained_on / "checkpoints" / "best.ckpt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state["state_dict"]["model.output.bias"] += 0.5
    torch.save(state, checkpoint)
    stale = json.loads((trained_on / "eval_mixture.json").read_text())
    (legacy / "eval_mixture.json").write_text(
        json.dumps(
            {k: v for k, v in json.loads((legacy / "eval_mixture.json").read_text()).items() if k != "weights_sha256"}
        )
    )
    before = {p: p.stat().st_mtime_ns for p in runs.rglob("eval_*.json")}
    compare(runs, tmp_path / "out")
    redone = {p for p, mtime in before.items() if p.stat().st_mtime_ns != mtime}
    assert redone == {*trained_on.glob("eval_*.json"), legacy / "eval_mixture.json"}
    fresh = json.loads((trained_on / "eval_mixture.json").read_text())
    assert fresh["weights_sha256"] != stale["weights_sha256"]
    assert fresh["metrics"]["test/nll"] != stale["metrics"]["test/nll"]
    assert "weights_sha256" in json.loads((legacy / "eval_mixture.json").read_text())


def test_an_evaluation_records_its_checkpoint_files_weights_whatever_mask_was_current_at_saving(compared, tmp_path):
    """A checkpoint saved while another bank mask was in use holds that mask in its buffers, which loading resets:
    the record is of the file, which made-compare hashes too, so the evaluation is reused."""
    runs = tmp_path / "sweep"
    shutil.copytree(compared[0], runs)
    bank = max((p.parent for p in runs.rglob("results.json")), key=lambda run: "num_masks=2" in str(run))
    checkpoint = bank / "checkpoints" / "best.ckpt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state["state_dict"]["model.output.mask"] = 1 - state["state_dict"]["model.output.mask"]  # not the mask loaded
    torch.save(state, checkpoint)
    assert evaluate(bank, "mixture")["weights_sha256"] == checkpoint_digest(checkpoint)


def test_compare_scores_poe_by_ais_beside_the_default_without_reusing_either(compared, tmp_path):
    sweep, out, _ = compared
    runs = tmp_path / "sweep"
    shutil.copytree(sweep, runs)
    defaults = {p: p.stat().st_mtime_ns for p in runs.rglob("eval_*.json")}
    compare(runs, tmp_path / "ais", parse_overrides(["poe.log_z_method=ais", "poe.ais_temperatures=20"]))
    assert {p: p.stat().st_mtime_ns for p in defaults} == defaults  # no file scored by default settings reused
    for run_dir in (p.parent for p in runs.rglob("results.json")):
        assert len(list(run_dir.glob("eval_poe*.json"))) == 2 and len(list(run_dir.glob("eval_*.json"))) == 6
    ais = {(int(r["num_masks"]), r["strategy"]): r for r in csv.DictReader((tmp_path / "ais" / "results.csv").open())}
    exact = {(int(r["num_masks"]), r["strategy"]): r for r in csv.DictReader((out / "results.csv").open())}
    assert exact[2, "poe"]["log_z_stderr"] == "0.0" and exact[2, "poe"]["effective_sample_size"] == ""
    assert float(ais[1, "poe"]["log_z"]) == 0.0  # one expert: every chain's weight is 1
    assert float(ais[2, "poe"]["effective_sample_size"]) > 100
    stderr = float(ais[2, "poe"]["log_z_stderr"])
    assert abs(float(ais[2, "poe"]["log_z"]) - float(exact[2, "poe"]["log_z"])) < 4 * stderr + 1e-5
    assert ais[2, "mixture"] == exact[2, "mixture"] | {"run_dir": ais[2, "mixture"]["run_dir"]}
    assert "Settings: poe.log_z_method=ais, poe.ais_temperatures=20." in (tmp_path / "ais" / "report.md").read_text()


@pytest.mark.parametrize(
    "setting,message",
    [
        ("poe.ais_chains=0", "ensemble.ais_chains=0 is not allowed; it must be >= 1"),
        ("poe.ais_schedule=cosine", "ais_schedule"),
    ],
)
def test_a_bad_strategy_setting_is_one_line_and_exit_2_before_any_evaluation(
    compared, tmp_path, capsys, setting, message
):
    sweep, _, _ = compared
    with pytest.raises(SystemExit) as exit_info:
        main([str(sweep), "--out", str(tmp_path), "--set", "poe.log_z_method=ais", setting])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("made-compare: error:") and message in error and "\n" not in error
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("make_dir", [False, True])
def test_missing_or_empty_dir_is_one_line_and_exit_2(tmp_path, capsys, make_dir):
    target = tmp_path / "sweep"
    if make_dir:
        target.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([str(target)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("made-compare: error:") and str(target) in error and "\n" not in error


def test_runs_trained_differently_are_kept_apart():
    assert training_label({"masks": {"schedule": "cycle", "objective": "nll"}}) == "bank, Jensen"
    assert training_label({"masks": {"schedule": "fresh", "objective": "nll"}}) == "fresh masks, Jensen"
    assert training_label({"masks": {"schedule": "cycle", "objective": "poe"}}) == "PoE objective"
    smc = {"masks": {"schedule": "cycle", "objective": "poe", "log_z": "smc"}, "init_from": "banks/0"}
    assert training_label(smc) == "PoE objective, smc, warm start"
    rows = [
        {
            "dataset": "dna",
            "training": training,
            "num_masks": 4,
            "strategy": "mixture",
            **{field: 80.0 for field in METRICS},
        }
        for training in ("bank, Jensen", "PoE objective")
    ]
    assert len(summarise(rows)) == 2
