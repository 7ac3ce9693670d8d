"""The same numbers on a GPU as on the CPU (skipped where no GPU is present; run on a lent machine)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import random_made
from made_exp.core.ais import poe_log_z_ais
from made_exp.core.ensemble import Mixture
from made_exp.core.normaliser import poe_log_z_exact
from made_exp.core.objectives import poe_loss
from made_exp.core.sampling import sample_incremental, sample_naive

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def test_log_prob_and_gradients_match_the_cpu():
    cpu = random_made(11, hidden_sizes=[40, 30], direct_connection="output")
    gpu = random_made(11, hidden_sizes=[40, 30], direct_connection="output").cuda()
    x = torch.bernoulli(torch.full((64, 11), 0.5, dtype=torch.float64))
    for k in range(3):
        cpu.set_mask(k), gpu.set_mask(k)
        cpu.zero_grad(), gpu.zero_grad()
        cpu.log_prob(x).sum().backward()
        gpu.log_prob(x.cuda()).sum().backward()
        for mine, reference in zip(gpu.parameters(), cpu.parameters(), strict=True):
            torch.testing.assert_close(mine.grad.cpu(), reference.grad, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(gpu.log_prob(x.cuda()).cpu(), cpu.log_prob(x), atol=1e-9, rtol=0)


def test_incremental_sampler_equals_naive_on_the_gpu():
    model = random_made(9, hidden_sizes=[30, 20]).cuda()
    uniform = torch.rand(200, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).cuda()
    mask = model.mask(2)
    assert torch.equal(sample_incremental(model, mask, 200, uniform), sample_naive(model, mask, 200, uniform))


def test_mixture_matches_the_cpu():
    cpu, gpu = random_made(8, num_masks=4), random_made(8, num_masks=4).cuda()
    x = torch.bernoulli(torch.full((32, 8), 0.5, dtype=torch.float64))
    scores = []
    for model, data in ((gpu, x.cuda()), (cpu, x)):
        mixture = Mixture()
        mixture.prepare(model)
        scores.append(mixture.log_prob(model, data)["log_prob"].cpu())
    torch.testing.assert_close(scores[0], scores[1], atol=1e-9, rtol=0)


def test_poe_training_gradient_matches_the_cpu():
    cpu, gpu = random_made(7, num_masks=3), random_made(7, num_masks=3).cuda()
    x = torch.bernoulli(torch.full((32, 7), 0.5, dtype=torch.float64))
    grads = []
    for model, data in ((gpu, x.cuda()), (cpu, x)):
        model.zero_grad()
        loss, _ = poe_loss(model, data, [model.mask(k) for k in range(3)], log_z="exact")
        loss.backward()
        grads.append([p.grad.cpu() for p in model.parameters()])
    for mine, reference in zip(*grads, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-9, rtol=1e-9)


def test_ais_on_the_gpu_agrees_with_enumeration():
    model = random_made(8, num_masks=4).cuda()
    masks = [model.mask(k) for k in range(4)]
    exact = poe_log_z_exact(model, masks)
    result = poe_log_z_ais(
        model, masks, num_chains=500, num_temperatures=50, generator=torch.Generator().manual_seed(0)
    )
    assert abs(result.log_z - exact) < 4 * result.log_z_stderr + 1e-3


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MADE_DATA_DIR") is None, reason="set MADE_DATA_DIR")
def test_made_train_runs_on_the_gpu(tmp_path):
    command = [
        sys.executable,
        "-m",
        "made_exp.cli.train",
        "data=dna",
        "trainer=gpu",
        "logger=csv",
        "masks=cycle",
        "model.num_masks=4",
        "model.hidden_sizes=[64]",
        "trainer.max_epochs=3",
        "matmul_precision=high",
    ]
    env = {**os.environ, "MADE_LOG_DIR": str(tmp_path)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert 60 < results["metrics"]["test/nll"] < 130
    assert results["hardware"]["gpu"]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MADE_DATA_DIR") is None, reason="set MADE_DATA_DIR")
def test_a_packed_sweep_on_the_gpu_matches_the_same_sweep_run_alone(tmp_path):
    sweep = [
        "-m",
        "data=dna",
        "trainer=gpu",
        "logger=csv",
        "module.num_samples=0",
        "masks=cycle",
        "model.num_masks=4",
        "model.hidden_sizes=[64]",
        "trainer.max_epochs=3",
        "seed=0,1,2",
        "hydra.sweep.subdir=${hydra.job.num}",
    ]
    env = {**os.environ, "MADE_LOG_DIR": str(tmp_path)}
    for launcher in ("packed", "basic"):
        command = [
            sys.executable,
            "-m",
            "made_exp.cli.train",
            *sweep,
            f"hydra/launcher={launcher}",
            f"hydra.sweep.dir={tmp_path / launcher}",
        ]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    for job in range(3):
        packed, alone = (
            json.loads((tmp_path / launcher / str(job) / "results.json").read_text())
            for launcher in ("packed", "basic")
        )
        assert packed["packed_with"] == 3 and packed["epochs"] == alone["epochs"] == 3
        assert packed["metrics"]["test/nll"] == pytest.approx(alone["metrics"]["test/nll"], abs=1e-3)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MADE_DATA_DIR") is None, reason="set MADE_DATA_DIR")
def test_made_eval_scores_on_the_gpu_as_on_the_cpu(tmp_path):
    """The product of experts with log Z by AIS, scored on the GPU (the default where there is one) and on the CPU:
    the same masks and AIS noise (CPU generators), so the same numbers up to float rounding."""
    command = [
        sys.executable,
        "-m",
        "made_exp.cli.train",
        "data=dna",
        "logger=csv",
        "masks=cycle",
        "model.num_masks=4",
        "model.hidden_sizes=[64]",
        "trainer.max_epochs=2",
    ]
    env = {**os.environ, "MADE_LOG_DIR": str(tmp_path)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    scores = {}
    for accelerator in ("auto", "cpu"):
        out = tmp_path / f"{accelerator}.json"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "made_exp.cli.evaluate",
                str(run_dir),
                "--ensemble",
                "poe",
                "--set",
                "log_z_method=ais",
                "ais_chains=200",
                "ais_temperatures=20",
                "--accelerator",
                accelerator,
                "--out",
                str(out),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        scores[accelerator] = json.loads(out.read_text())
    assert (scores["auto"]["device"], scores["cpu"]["device"]) == ("cuda", "cpu")
    for key in ("test/nll", "test/ensemble/log_z"):
        assert scores["auto"]["metrics"][key] == pytest.approx(scores["cpu"]["metrics"][key], abs=1e-4)
