"""The LightningModule: grouped minibatches give the same training, metrics reduce correctly."""

import math
import os
from functools import partial

import pytest
import pytorch_lightning as pl
import torch

from made_exp.core.ensemble import LogitAverage, Mixture
from made_exp.core.made import MADE
from made_exp.core.masks import MaskSchedule
from made_exp.data.datamodules import SyntheticDataModule
from made_exp.errors import DivergenceError
from made_exp.lightning.module import MADEModule, use_plain_cuda_checks_without_a_driver


def fit(
    minibatches_per_step: int,
    schedule: str = "fresh",
    epochs: int = 2,
    lr_decay: float = 0.9,
    compile_model: bool = False,
    num_masks: int = 3,
    callbacks=(),
    **masks,
):
    pl.seed_everything(0, verbose=False)
    datamodule = SyntheticDataModule(
        input_dim=8,
        num_train=330,
        num_valid=100,
        num_test=100,
        batch_size=32,
        minibatches_per_step=minibatches_per_step,
    )
    model = MADE(8, [24], num_masks=num_masks, seed=0)
    module = MADEModule(
        model,
        partial(torch.optim.Adam, lr=1e-2),
        MaskSchedule(schedule, val_num_masks=3, **masks),
        Mixture(),
        lr_decay=lr_decay,
        num_samples=0,
        compile_model=compile_model,
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        callbacks=list(callbacks),
    )
    trainer.fit(module, datamodule=datamodule)
    return trainer, module, datamodule


@pytest.mark.parametrize("schedule", ["cycle", "fresh"])
def test_grouped_minibatches_train_exactly_like_single_ones(schedule):
    _, one, _ = fit(1, schedule)
    trainer, grouped, _ = fit(4, schedule)
    assert trainer.global_step == 2 * math.ceil(330 / 32)  # one optimiser step per minibatch
    for (name, a), (_, b) in zip(one.state_dict().items(), grouped.state_dict().items(), strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), name


@pytest.mark.slow
def test_compiled_model_trains_like_the_eager_one():
    import torch._dynamo

    torch._dynamo.reset()
    _, eager, _ = fit(1, "cycle", epochs=1)
    _, compiled, _ = fit(1, "cycle", epochs=1, compile_model=True)
    assert torch._dynamo.utils.counters["frames"]["ok"] > 0  # the forward really ran compiled
    for (name, a), (_, b) in zip(eager.state_dict().items(), compiled.state_dict().items(), strict=True):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=name)


def test_one_mask_training_with_the_mask_baked_in_matches_multiplying_it_every_step(monkeypatch):
    trainer, baked, datamodule = fit(1, "cycle", num_masks=1)
    monkeypatch.setattr(MaskSchedule, "uses_one_mask", lambda self, model: False)
    _, plain, _ = fit(1, "cycle", num_masks=1)
    assert not baked.model.mask_baked  # unbaked after fitting
    for mine, reference in zip(baked.model.masked_layers(), plain.model.masked_layers(), strict=True):
        assert torch.equal(mine.weight, mine.weight * mine.mask)  # removed weights stayed zero
        assert torch.equal(mine.weight, reference.weight * reference.mask)
        assert torch.equal(mine.bias, reference.bias)
    x = datamodule.split("test")
    assert torch.equal(baked.model.log_prob(x), plain.model.log_prob(x))


class CountBackwards(pl.Callback):
    def __init__(self):
        self.calls = 0

    def on_after_backward(self, trainer, pl_module):
        self.calls += 1


def test_backward_hooks_run_when_a_callback_needs_them_and_are_skipped_otherwise():
    trainer, plain, _ = fit(4, "cycle", epochs=1)
    assert plain._plain_backward  # nothing overrides the hooks: loss.backward() directly
    counter = CountBackwards()
    trainer, hooked, _ = fit(4, "cycle", epochs=1, callbacks=[counter])
    assert not hooked._plain_backward and counter.calls == trainer.global_step == math.ceil(330 / 32)
    for (name, a), (_, b) in zip(plain.state_dict().items(), hooked.state_dict().items(), strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), name


def test_learning_rate_decays_per_epoch():
    trainer, _, _ = fit(2, epochs=3, lr_decay=0.5)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5**3)


def test_mixture_objective_trains():
    trainer, module, _ = fit(1, objective="mixture", samples_per_step=3)
    assert math.isfinite(float(trainer.callback_metrics["train/nll"]))


def test_test_metrics_include_the_spread_and_bits_per_dim():
    trainer, module, datamodule = fit(1, "cycle", epochs=1)
    trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = module.test_results
    assert metrics["test/bpd"] == pytest.approx(metrics["test/nll"] / (8 * math.log(2)))
    assert metrics["test/nll"] <= metrics["test/single_mask_nll_mean"] + 1e-9  # Jensen
    assert metrics["test/single_mask_nll_best"] <= metrics["test/single_mask_nll_mean"]
    module.ensemble = LogitAverage()
    trainer.test(module, datamodule=datamodule, verbose=False)
    assert "test/nll" not in module.test_results and "test/unnormalised_nll" in module.test_results


def test_non_finite_loss_stops_with_a_clear_error():
    datamodule = SyntheticDataModule(input_dim=8, num_train=64, num_valid=32, num_test=32, batch_size=32)
    model = MADE(8, [8])
    with torch.no_grad():
        model.output.bias.fill_(float("nan"))
    module = MADEModule(model, partial(torch.optim.SGD, lr=0.1), MaskSchedule(), Mixture(), num_samples=0)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(DivergenceError, match="mean loss nan"):
        trainer.fit(module, datamodule=datamodule)


def test_a_loss_far_above_the_uniform_models_stops_the_run():
    datamodule = SyntheticDataModule(input_dim=8, num_train=64, num_valid=32, num_test=32, batch_size=32)
    module = MADEModule(MADE(8, [8]), partial(torch.optim.SGD, lr=0.1), MaskSchedule(), Mixture(), num_samples=0)
    with torch.no_grad():
        module.model.output.bias.fill_(-1e3)  # finite, but every x_d = 1 costs 1000 nats
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(DivergenceError, match="diverged at epoch 0"):
        trainer.fit(module, datamodule=datamodule)


@pytest.mark.parametrize("driver", [True, False])
def test_lightnings_nvml_cuda_check_is_dropped_only_without_a_driver(monkeypatch, driver):
    def load(name):
        if not driver:
            raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr("made_exp.lightning.module.ctypes.CDLL", load)
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    use_plain_cuda_checks_without_a_driver()
    assert (os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1") == driver
