"""End to end through the real console scripts: made-train, made-eval, made-sample."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_robustness import assert_one_line_error

BIN = Path(sys.executable).parent
DATA_DIR = os.environ.get("MADE_DATA_DIR")
needs_data = pytest.mark.skipif(DATA_DIR is None, reason="set MADE_DATA_DIR to the paper's data (../shared/data)")


def run(command: list[str], log_dir: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "MADE_LOG_DIR": str(log_dir), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def only_run_dir(log_dir: Path) -> Path:
    (run_dir,) = (log_dir / "train" / "runs").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def dna_run(tmp_path_factory) -> Path:
    """A few epochs of MADE on dna with the default loggers (W&B offline + CSV)."""
    log_dir = tmp_path_factory.mktemp("logs")
    result = run(
        [
            str(BIN / "made-train"),
            "data=dna",
            "masks=cycle",
            "model.num_masks=4",
            "model.hidden_sizes=[64]",
            "trainer.max_epochs=4",
            "seed=1",
        ],
        log_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "anonymous setting" not in result.stderr and "Tip:" not in result.stderr  # a normal run is quiet
    return only_run_dir(log_dir)


@pytest.mark.slow
@needs_data
def test_train_writes_results_checkpoints_and_logs(dna_run):
    results = json.loads((dna_run / "results.json").read_text())
    metrics = results["metrics"]
    assert 60 < metrics["test/nll"] < 130  # dna: 180 binary dims; the paper reaches ~80 nats
    assert metrics["test/bpd"] == pytest.approx(metrics["test/nll"] / (180 * 0.6931471805599453))
    # Jensen: the mixture of the 4 masks is at least as good as their average
    assert metrics["test/nll"] <= metrics["test/single_mask_nll_mean"] + 1e-9
    assert results["config"]["data"]["name"] == "dna" and results["wall_time_s"] > 0
    assert results["git_commit"] and results["hardware"]["cpu_count"] >= 1
    assert (dna_run / "checkpoints" / "best.ckpt").is_file() and (dna_run / "checkpoints" / "last.ckpt").is_file()
    assert (dna_run / ".hydra" / "config.yaml").is_file() and (dna_run / "samples.png").is_file()
    assert list((dna_run / "csv").rglob("metrics.csv"))
    assert list((dna_run / "wandb").glob("offline-run-*"))


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("ensemble", ["mixture", "logit_average", "best_single"])
def test_eval_scores_the_checkpoint_under_an_ensemble(dna_run, ensemble):
    result = run([str(BIN / "made-eval"), str(dna_run), "--ensemble", ensemble], dna_run.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.loads((dna_run / f"eval_{ensemble}.json").read_text())
    assert evaluation["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # --accelerator auto
    metrics = evaluation["metrics"]
    if ensemble == "logit_average":
        assert "test/nll" not in metrics and "test/unnormalised_nll" in metrics
    else:
        assert 60 < metrics["test/nll"] < 130
    if ensemble == "mixture":  # made-eval reproduces the number made-train reported
        trained = json.loads((dna_run / "results.json").read_text())["metrics"]["test/nll"]
        assert metrics["test/nll"] == pytest.approx(trained, rel=1e-9)


@pytest.mark.slow
@needs_data
def test_eval_in_a_shell_without_made_data_dir_reads_the_data_the_run_trained_on(dna_run, tmp_path):
    """A run trained with $MADE_DATA_DIR set, scored later where it is not: the directory it trained from,
    not the (empty) cache or a download (any download would fail here: the proxy is a closed local port)."""
    env = {key: value for key, value in os.environ.items() if key != "MADE_DATA_DIR"}
    env.update(MADE_CACHE_DIR=str(tmp_path / "empty cache"), https_proxy="http://127.0.0.1:9", WANDB_MODE="offline")
    result = subprocess.run(
        [str(BIN / "made-eval"), str(dna_run), "--out", str(tmp_path / "eval.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scored = json.loads((tmp_path / "eval.json").read_text())["metrics"]["test/nll"]
    assert scored == pytest.approx(json.loads((dna_run / "results.json").read_text())["metrics"]["test/nll"])


@pytest.mark.slow
@needs_data
def test_a_sigterm_stops_a_long_evaluation_at_once_with_143_and_writes_nothing(dna_run, tmp_path):
    """Lightning only flags a SIGTERM during a test; an AIS evaluation of hours must still end when a scheduler says."""
    out = tmp_path / "eval.json"
    process = subprocess.Popen(
        [
            str(BIN / "made-eval"),
            str(dna_run),
            "--ensemble",
            "poe",
            "--set",
            "log_z_method=ais",
            "ais_chains=20000",
            "ais_temperatures=5000",
            "--out",
            str(out),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    try:
        for line in process.stderr:  # Lightning's device lines: the trainer exists, the test begins
            if "TPU available" in line:
                break
        time.sleep(3)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, stderr[-2000:]
    assert "stopped by SIGTERM" in stderr and not out.exists()


@pytest.mark.slow
@needs_data
def test_sample_writes_a_png(dna_run, tmp_path):
    out = tmp_path / "grid.png"
    result = run([str(BIN / "made-sample"), str(dna_run), "--num-samples", "16", "--out", str(out)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@needs_data
def test_sample_never_overwrites_a_file_unasked(dna_run, tmp_path):
    trained = dna_run / "samples.png"
    before = trained.stat().st_mtime_ns, trained.read_bytes()
    result = run([str(BIN / "made-sample"), str(dna_run), "--num-samples", "9"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    drawn = dna_run / "samples_seed0_n9.png"
    assert drawn.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for out in (trained, drawn):
        kept = out.stat().st_mtime_ns, out.read_bytes()
        refused = run([str(BIN / "made-sample"), str(dna_run), "--num-samples", "9", "--out", str(out)], tmp_path)
        assert_one_line_error(refused, str(out), "--overwrite")
        assert (out.stat().st_mtime_ns, out.read_bytes()) == kept
    assert (trained.stat().st_mtime_ns, trained.read_bytes()) == before
    replaced = run(
        [
            str(BIN / "made-sample"),
            str(dna_run),
            "--num-samples",
            "9",
            "--seed",
            "1",
            "--out",
            str(drawn),
            "--overwrite",
        ],
        tmp_path,
    )
    assert replaced.returncode == 0 and drawn.stat().st_mtime_ns > kept[0], replaced.stderr[-3000:]


@pytest.mark.slow
@needs_data
def test_resuming_a_finished_run_refuses_without_overwrite(dna_run):
    before = (dna_run / "results.json").read_bytes()
    result = run([str(BIN / "made-train"), "data=dna", f"resume={dna_run}"], dna_run.parent)
    assert result.returncode == 2 and "overwrite=true" in result.stderr
    assert (dna_run / "results.json").read_bytes() == before


@pytest.mark.slow
@needs_data
def test_a_run_trained_before_the_layered_layout_still_loads(dna_run, tmp_path):
    """Its .hydra/config.yaml names made_exp.made.MADE etc.: made-eval follows the classes to where they are now."""
    old_run = tmp_path / "old_run"
    shutil.copytree(dna_run, old_run)
    config = old_run / ".hydra" / "config.yaml"
    text = config.read_text()
    for new, old in [
        ("made_exp.core.made.", "made_exp.made."),
        ("made_exp.core.masks.", "made_exp.masking."),
        ("made_exp.core.ensemble.", "made_exp.ensemble."),
        ("made_exp.data.datamodules.", "made_exp.data."),
        ("made_exp.lightning.module.", "made_exp.module."),
    ]:
        assert new in text
        text = text.replace(new, old)
    config.write_text(text)
    result = run([str(BIN / "made-eval"), str(old_run)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((dna_run / "results.json").read_text())["metrics"]["test/nll"]
    assert json.loads((old_run / "eval_mixture.json").read_text())["metrics"]["test/nll"] == pytest.approx(trained)


@pytest.mark.slow
@needs_data
def test_a_truncated_checkpoint_is_one_line_naming_it_and_best_never_silently_becomes_last(dna_run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(dna_run, broken)
    best = broken / "checkpoints" / "best.ckpt"
    best.write_bytes(best.read_bytes()[:4000])
    for program in ("made-eval", "made-sample"):
        result = run([str(BIN / program), str(broken)], tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert f"{best}: unreadable checkpoint" in result.stderr
    best.unlink()
    result = run([str(BIN / "made-eval"), str(broken)], tmp_path)
    assert result.returncode == 2 and "pass --checkpoint last" in result.stderr
    result = run([str(BIN / "made-eval"), str(broken), "--checkpoint", "last"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((broken / "eval_mixture.json").read_text())["checkpoint"] == str(
        broken / "checkpoints" / "last.ckpt"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_eval_on_a_gpu_where_there_is_none_is_one_line_and_writes_nothing(tmp_path):
    result = run([str(BIN / "made-eval"), str(tmp_path), "--accelerator", "gpu"], tmp_path)
    assert_one_line_error(result, "--accelerator gpu", "no GPU")
    assert list(tmp_path.iterdir()) == []


def test_help_lists_every_config_group_and_its_options_but_no_internal_schema(tmp_path):
    result = run([str(BIN / "made-train"), "--help"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "  masks: " in result.stdout and "poe_objective" in result.stdout and "  data: " in result.stdout
    assert "  schema:" not in result.stdout  # the typed schemas are internal
    composed = run([str(BIN / "made-train"), "--cfg", "job", "data=dna"], tmp_path)
    assert composed.returncode == 0 and "name: dna" in composed.stdout
