"""made-bench: every key present and finite on a tiny run, and the fast paths equal the plain ones."""

import json
import math
import warnings
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from conftest import compose_train
from made_exp.cli.bench import (
    QUICK,
    TARGETS,
    BaselineMADE,
    for_device,
    main,
    run_benchmarks,
)
from made_exp.cli.bench_objectives import run_objective_benchmarks, schedules
from made_exp.cli.timing import best_block, training_gemm_flops
from made_exp.core.made import MADE, hidden_mask, output_mask
from made_exp.core.sampling import sample_incremental, sample_naive

TINY = replace(
    QUICK,
    dataset="dna",
    hidden=16,
    small_dataset="mushrooms",
    small_hidden=8,
    batch_size=20,
    steps=2,
    repeats=2,
    warmup=1,
    minibatches_per_step=3,
    gemm_square=32,
    ensemble_masks=(2, 5),
    ensemble_examples=(60, 30),
    eval_batch_size=25,
    sampler_batch=4,
    big_hidden=(24, 24),
    naive_positions=None,
    big_naive_positions=3,
    paper_training=True,
)

KEYS = [
    "gemm_gflops",
    "bare_examples_per_s",
    "bare_torch_bce_examples_per_s",
    "bare_unbaked_examples_per_s",
    "bare_unfused_adam_examples_per_s",
    "lightning_examples_per_s",
    "lightning_grouped_examples_per_s",
    "bare_gemm_fraction",
    "baseline_examples_per_s",
    "speedup_vs_baseline",
    "small_bare_examples_per_s",
    "small_lightning_examples_per_s",
    "small_lightning_grouped_examples_per_s",
    "small_bare_gemm_fraction",
    "ensemble_2_mask_examples_per_s",
    "ensemble_5_mask_examples_per_s",
    "ensemble_5_gemm_fraction",
    "naive_sample_s",
    "incremental_sample_s",
    "sampler_speedup",
    "big_naive_sample_s",
    "big_incremental_sample_s",
    "big_sampler_speedup",
    "paper_mnist_examples_per_s",
    "paper_mnist_gemm_tflops",
    "peak_rss_mb",
    "torch_threads",
    "startup_train_help_s",
    "startup_eval_help_s",
]


def build(**kwargs) -> MADE:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MADE(**kwargs).double()


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    # no data files here: the benchmark falls back to random bits of the datasets' shapes
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MADE_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        patch.setenv("MADE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        return run_benchmarks(TINY)


def test_every_key_is_positive_and_finite(tiny_results):
    for key in KEYS:
        assert math.isfinite(tiny_results[key]) and tiny_results[key] > 0, key
    for key in ("torch", "cpu", "date"):
        assert tiny_results[key]
    assert tiny_results["dataset"] == "dna (absent: random bits)"
    packed_targets = {key for key in TARGETS if key.startswith("sweep_")}  # made-bench --packed's
    assert set(TARGETS) - packed_targets - {"ensemble_1000_gemm_fraction"} <= set(tiny_results)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_every_key_is_finite_on_a_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("MADE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MADE_CACHE_DIR", str(tmp_path))
    results = run_benchmarks(replace(TINY, device="cuda"))
    for key in KEYS + ["peak_gpu_memory_mb"]:
        assert math.isfinite(results[key]) and results[key] > 0, key
    assert results["gpu"]


def test_for_device_keeps_cpu_sizes_and_enlarges_gpu_work():
    assert for_device(QUICK, "cpu") == replace(QUICK, device="cpu")
    gpu = for_device(QUICK, "cuda")
    assert gpu.paper_training and gpu.gemm_square > QUICK.gemm_square and gpu.device == "cuda"


def test_cli_prints_the_table_and_writes_the_json(tiny_results, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("made_exp.cli.bench.run_benchmarks", lambda config, log: tiny_results)
    main(["--quick", "--json", str(tmp_path / "bench.json")])
    assert json.loads((tmp_path / "bench.json").read_text()) == json.loads(json.dumps(tiny_results))
    assert "bare_gemm_fraction" in capsys.readouterr().out


def test_training_gemm_flops_counts_five_gemms_for_one_hidden_layer():
    assert training_gemm_flops(100, [784, 500, 784]) == 5 * 2 * 100 * 784 * 500
    # two hidden layers: 3 forward, 3 weight gradients, 2 input gradients
    assert training_gemm_flops(10, [4, 6, 8, 4]) == 2 * 10 * (2 * (24 + 48 + 32) + 48 + 32)


def test_best_block_is_the_fastest_block_per_unit_of_work():
    stamps = [0.0, 5.0, 6.0, 7.0, 9.0, 13.0]  # warm-up step, then blocks (6 - 5)+(7 - 6) and (9 - 7)+(13 - 9)
    assert best_block(stamps, [1, 1, 1, 1, 2], steps=2, repeats=2, warmup=1) == pytest.approx(2.0 / 2)
    assert best_block(stamps, [1, 1, 1, 2, 4], steps=2, repeats=2, warmup=1) == pytest.approx(6.0 / 6)


def test_baseline_matches_made_outputs_and_gradients():
    model = build(input_dim=9, hidden_sizes=[13], num_masks=3, seed=1).float()
    model.set_mask(2)
    baseline = BaselineMADE(model)
    x = torch.bernoulli(torch.full((7, 9), 0.5))
    torch.testing.assert_close(baseline(x), model(x), atol=1e-6, rtol=0)
    (-model.log_prob(x).mean()).backward()
    F.binary_cross_entropy_with_logits(baseline(x), x, reduction="none").sum(1).mean().backward()
    for theirs, mine in ((baseline[0], model.hidden[0]), (baseline[2], model.output)):
        torch.testing.assert_close(theirs.weight.grad, mine.weight.grad, atol=1e-6, rtol=0)
        torch.testing.assert_close(theirs.bias.grad, mine.bias.grad, atol=1e-6, rtol=0)


def test_mask_construction_matches_the_plain_comparison():
    out_degrees, in_degrees = torch.randint(1, 9, (11,)), torch.randint(1, 9, (7,))
    assert torch.equal(hidden_mask(out_degrees, in_degrees), (out_degrees[:, None] >= in_degrees).float())
    assert torch.equal(output_mask(out_degrees, in_degrees), (out_degrees[:, None] > in_degrees).float())


@pytest.mark.parametrize("direct", ["none", "full"])
def test_cached_masked_weights_give_the_plain_outputs_and_gradients(direct):
    model = build(input_dim=8, hidden_sizes=[12, 10], num_masks=3, direct_connection=direct, condition_on_mask=True)
    x = torch.bernoulli(torch.full((5, 8), 0.5, dtype=torch.float64))

    def plain(k: int) -> torch.Tensor:
        model.set_mask(k)
        h = x
        for index, layer in enumerate(model.hidden):
            pre = F.linear(h, layer.weight * layer.mask, layer.bias) + (layer.mask_weight * layer.mask).sum(1)
            if index > 0 and model.input_skips:
                pre = pre + F.linear(x, model.input_skips[index - 1].weight * model.input_skips[index - 1].mask)
            h = torch.relu(pre)
        out = model.output
        logits = F.linear(h, out.weight * out.mask, out.bias) + (out.mask_weight * out.mask).sum(1)
        if model.direct is not None:
            logits = logits + F.linear(x, model.direct.weight * model.direct.mask)
        return logits

    with torch.no_grad():
        expected = [plain(k) for k in range(3)]
    with model.cache_masked_weights():
        for k in (0, 1, 1, 2, 0):  # a changed mask refreshes the cache
            model.set_mask(k)
            with torch.no_grad():
                torch.testing.assert_close(model(x), expected[k], atol=1e-12, rtol=0)
        # with gradients on, the cache is bypassed: the weight gradient is grad * mask
        model.set_mask(1)
        model(x).sum().backward()
        cached_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    plain(1).sum().backward()
    for cached, reference in zip(cached_grads, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(cached, reference, atol=1e-12, rtol=0)
    assert all(layer._masked_weight_cache is None for layer in model.hidden)


def test_naive_sampler_with_cached_weights_still_matches_incremental():
    model = build(input_dim=7, hidden_sizes=[15, 9], num_masks=2, direct_connection="output")
    uniform = torch.rand(50, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    mask = model.mask(1)
    assert torch.equal(sample_naive(model, mask, 50, uniform), sample_incremental(model, mask, 50, uniform))
    assert model.hidden[0]._masked_weight_cache is None


def test_packed_step_breakdown_parts_add_up_and_a_tiny_packed_sweep_runs(tmp_path, monkeypatch):
    from made_exp.cli import bench_packed

    parts = bench_packed.step_breakdown(3, input_dim=8, hidden=16, batch_size=10, steps=2, repeats=1, warmup=1)
    assert all(math.isfinite(value) and value > 0 for key, value in parts.items() if not key.endswith("other_ms"))
    assert parts["step_3_packed_ms"] == pytest.approx(
        parts["step_3_gemm_ms"] + parts["step_3_optimiser_ms"] + parts["step_3_other_ms"]
    )
    seconds = bench_packed.sweep_seconds("packed", 2, 1, tmp_path / "sweep")
    assert seconds > 0 and len(list((tmp_path / "sweep").glob("*/results.json"))) == 2


def test_objective_benchmark_times_every_objective_against_the_jensen_step():
    results = run_objective_benchmarks(num_masks=(2, 3), input_dim=6, hidden=8, batch_size=5, steps=1, repeats=1)
    names = [
        "jensen",
        "mixture_objective",
        "learned_mixture_objective",
        "poe_objective",
        "poe_objective_smc",
        "poe_objective_nce",
        "draw_poe_samples",
    ]
    assert sorted(results) == sorted(
        f"k{k}_{name}_{unit}" for k in (2, 3) for name in names for unit in ("ms_per_step", "vs_jensen")
    )
    assert all(math.isfinite(value) and value > 0 for value in results.values())
    assert results["k2_jensen_vs_jensen"] == results["k3_jensen_vs_jensen"] == 1.0


@pytest.mark.parametrize("name", ["mixture_objective", "learned_mixture_objective", "poe_objective"])
def test_objective_benchmark_sets_each_objective_up_as_made_train_does(name):
    timed = schedules(log_z_samples=7)[name]
    trained = compose_train([f"masks={name}"], with_hydra=False).masks
    assert (timed.schedule, timed.objective, timed.samples_per_step, timed.alpha) == (
        trained.schedule,
        trained.objective,
        trained.samples_per_step,
        trained.alpha,
    )
    assert schedules(7)["jensen"].objective == "nll" and schedules(7)["jensen"].schedule == "cycle"


@pytest.mark.parametrize("estimator", ["smc", "nce"])
def test_objective_benchmark_sets_each_estimator_up_as_made_train_does(estimator):
    timed = schedules(log_z_samples=7)[f"poe_objective_{estimator}"]
    trained = instantiate(compose_train(["masks=poe_objective", f"masks.log_z={estimator}"], with_hydra=False).masks)
    model = MADE(input_dim=6, hidden_sizes=[8], num_masks=2)
    settings = ("resample_below", "mh_steps", "gibbs_sweeps", "noise_ratio", "refresh_steps", "log_z_scale")
    built = [schedule.log_z_estimator(model) for schedule in (timed, trained)]
    assert (timed.objective, timed.log_z) == (trained.objective, trained.log_z)
    assert [{name: getattr(e, name) for name in settings if hasattr(e, name)} for e in built] == [
        {name: getattr(built[1], name) for name in settings if hasattr(built[1], name)}
    ] * 2
