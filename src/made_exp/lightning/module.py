"""LightningModule around MADE: glue only (masks per step, metrics, optimiser).

Metrics, all per example: ``train/nll``, ``val/nll``, ``test/nll`` in nats, and the
same in bits per dimension (``*/bpd`` = nats / (D ln 2)).
"""

from __future__ import annotations

import ctypes
import math
import os
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.strategies import SingleDeviceStrategy
from torch import Tensor

from made_exp.core.ensemble import Mixture, ProductOfExperts
from made_exp.core.made import MADE
from made_exp.core.masks import MaskSchedule
from made_exp.core.objectives import estimator_degraded
from made_exp.errors import DivergenceError

__all__ = ["MADEModule", "DIVERGED_AT", "divergence"]

DIVERGED_AT = 10  # a training loss above this many times D ln 2 (the uniform model's NLL) stops the run


def use_plain_cuda_checks_without_a_driver() -> None:
    """Undo Lightning's ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` where NVML cannot load (no NVIDIA driver).

    Lightning sets it on import so that CUDA checks go through NVML and keep ``fork`` safe. Without a
    driver NVML never loads, and each ``torch.cuda.is_available()`` retries, and Adam's ``step`` calls
    that check: 0.15 ms per optimiser step on a CPU machine. Without a driver the plain check cannot
    initialise CUDA either, so it is just as fork-safe.
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1":
        return
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


use_plain_cuda_checks_without_a_driver()


def divergence(loss: float, input_dim: int, epoch: int, step: int) -> DivergenceError | None:
    """The DivergenceError for a mean training loss (nats per example) that is not finite or above ``DIVERGED_AT``
    times the uniform model's D ln 2, which no sane run reaches after its first steps; None for a sane loss."""
    uniform = input_dim * math.log(2)
    if math.isfinite(loss) and loss <= DIVERGED_AT * uniform:
        return None
    return DivergenceError(
        f"training diverged at epoch {epoch}, step {step}: mean loss {loss:.4g} nats, above {DIVERGED_AT} x D ln 2 = "
        f"{DIVERGED_AT * uniform:.4g} (the uniform model's); the run dir keeps checkpoints/last.ckpt of the last "
        "complete epoch, if any (try a lower optimizer.lr)"
    )


class MADEModule(pl.LightningModule):
    """Trains ``model`` with the mask ``schedule``; validates on a mixture of masks; tests with ``ensemble``.

    Args:
        model: the MADE.
        optimizer: a partial optimiser, completed with the parameters (``_partial_: true``).
        masks: the training-time mask schedule.
        ensemble: the test-time combination of masks (see ``made_exp.core.ensemble``).
        lr_decay: per-epoch multiplicative learning-rate decay (1 = none).
        num_samples: samples drawn after testing for the sample grid (0 = none).
        compile_model: compile MADE's forward with ``torch.compile`` (in place, so checkpoints keep
            their keys); changing masks does not recompile, since masks are buffers.
        evaluation_seed: seeds the fresh masks of the validation and test mixtures.
    """

    def __init__(
        self,
        model: MADE,
        optimizer: Callable,
        masks: MaskSchedule,
        ensemble: Mixture,
        lr_decay: float = 1.0,
        num_samples: int = 64,
        compile_model: bool = False,
        evaluation_seed: int = 4321,
    ):
        super().__init__()
        self.model = model
        self.mixture_weights = masks.mixture_weights(model)  # trained with the model by learned_mixture, else None
        self.log_z_estimator = masks.log_z_estimator(model)  # the poe objective's smc particles or nce state
        self.degraded_epochs: list[tuple[int, str]] = []  # (epoch, why) where the log Z estimator degraded
        self.optimizer_factory = optimizer
        self.masks = masks
        self.ensemble = ensemble
        self.lr_decay = lr_decay
        self.num_samples = num_samples
        self.compile_model = compile_model
        self._compiled = False
        self._plain_backward = False  # set at the start of fitting (see _manual_backward_adds_nothing)
        self._num_train: int | None = None  # the training set's size, set at the start of fitting
        self.nats_to_bpd = 1.0 / (model.input_dim * math.log(2))
        self.validation_ensemble = _validation_ensemble(masks, model, evaluation_seed)
        self.test_results: dict[str, float] = {}
        self.per_mask_nll: list[float] = []  # test NLL of each mask on its own, when the ensemble reports them
        self._sums: dict[str, dict[str, tuple[Tensor, int]]] = {"train": {}, "val": {}, "test": {}}

    def configure_model(self) -> None:
        """Compile once (lazily: at the first forward); Lightning calls this for fit and again for test."""
        if self.compile_model and not self._compiled:
            self.model.compile()
            self._compiled = True

    automatic_optimization = False  # one optimiser step per minibatch, several minibatches per Lightning step

    def configure_optimizers(self):
        optimizer = self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
        if self.lr_decay == 1.0:
            return optimizer
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=self.lr_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def training_step(self, minibatches: list[Tensor], batch_idx: int) -> Tensor:
        """One Adam/SGD/... step per (B, D) minibatch. Grouping minibatches (``data.minibatches_per_step``)
        pays Lightning's ~1 ms per-step overhead once per group instead of once per minibatch."""
        optimizer = self.optimizers()
        total, count = 0.0, 0
        for minibatch in minibatches:
            masks = self.masks.training_masks(self.model, self.global_step)
            loss, stats = self.masks.loss(
                self.model,
                minibatch,
                masks,
                self.mixture_weights,
                self.model.generator,
                self._num_train,
                self.log_z_estimator,
            )
            optimizer.zero_grad(set_to_none=True)
            if self._plain_backward:
                loss.backward()
            else:
                self.manual_backward(loss)
            optimizer.step()
            if self.model.mask_baked:
                self.model.zero_masked_weights()
            total, count = total + loss.detach() * len(minibatch), count + len(minibatch)
            for name, value in stats.items():  # e.g. the poe objective's log_z and effective sample fraction
                self._accumulate("train", name, torch.tensor(float(value), device=total.device), 1)
        self._stop_if_diverged(float(total / count))
        self._accumulate("train", "nll", total, count)  # logged once per epoch, not through self.log every step
        return total / count

    def _stop_if_diverged(self, loss: float) -> None:
        error = divergence(loss, self.model.input_dim, self.current_epoch, self.global_step)
        if error is not None:
            raise error

    def _use_learned_weights(self, ensemble) -> bool:
        """Give a uniform bank ``Mixture`` the weights the learned_mixture objective trained; whether it did."""
        if self.mixture_weights is None or type(ensemble) is not Mixture or ensemble.mask_source != "bank":
            return False
        if len(ensemble.masks) != self.model.num_masks:
            return False
        ensemble.log_weights = self.mixture_weights.log_weights().detach()
        return True

    def on_train_start(self) -> None:
        self._num_train = len(self.trainer.datamodule.split("train"))
        # one fixed mask: keep W * M in the weights rather than multiplying in every forward and backward
        if self.masks.uses_one_mask(self.model):
            self.model.bake_mask()
        self._plain_backward = self._manual_backward_adds_nothing()

    def _manual_backward_adds_nothing(self) -> bool:
        """Whether ``manual_backward`` would only call ``loss.backward()`` and hooks that nobody overrides
        (one device, fp32): then the training loop skips Lightning's hook dispatch for every minibatch."""
        trainer = self.trainer
        if type(trainer.strategy) is not SingleDeviceStrategy or type(trainer.precision_plugin) is not Precision:
            return False
        hooks = ("on_before_backward", "on_after_backward")
        overridden = [
            getattr(type(obj), hook) is not getattr(base, hook)
            for obj, base in [(self, pl.LightningModule), *((c, pl.Callback) for c in trainer.callbacks)]
            for hook in hooks
        ]
        return not any(overridden)

    def on_train_end(self) -> None:
        self.model.unbake_mask()

    def on_train_epoch_end(self) -> None:
        means = self._reduced_means("train")
        if means:
            self.log("train/nll", means.pop("nll"), prog_bar=True)
            self.log_dict({f"train/{name}": value for name, value in means.items()})
            why = estimator_degraded({name: float(value) for name, value in means.items()})
            if why is not None:
                self.degraded_epochs.append((self.current_epoch + 1, why))
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    # Every stage accumulates sums and counts and reduces them over ranks once per epoch, so
    # a distributed run scores every example exactly once, like a single process.
    def _accumulate(self, stage: str, name: str, total: Tensor, count: int) -> None:
        """Add ``total`` (a (...,) sum of per-example NLLs) over ``count`` examples to ``stage``'s ``name``."""
        running_total, running_count = self._sums[stage].get(name, (0.0, 0))
        self._sums[stage][name] = (running_total + total.double(), running_count + count)

    def _accumulate_examples(self, stage: str, name: str, values: Tensor) -> None:
        """values: (..., B) per-example NLLs."""
        self._accumulate(stage, name, values.double().sum(-1), values.shape[-1])

    def _reduced_means(self, stage: str) -> dict[str, Tensor]:
        """``stage``'s means over every rank's examples since the last call."""
        means = {}
        for name, (total, count) in self._sums[stage].items():
            count = torch.tensor(float(count), dtype=torch.float64, device=total.device)
            if self.trainer.world_size > 1:
                total, count = self.all_gather(total).sum(0), self.all_gather(count).sum(0)
            means[name] = total / count
        self._sums[stage] = {}
        return means

    def on_validation_epoch_start(self) -> None:
        self.validation_ensemble.prepare(self.model)
        self._use_learned_weights(self.validation_ensemble)

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self._accumulate_examples("val", "nll", -self.validation_ensemble.log_prob(self.model, batch)["log_prob"])

    def on_validation_epoch_end(self) -> None:
        nll = float(self._reduced_means("val")["nll"])
        self.log_dict({"val/nll": nll, "val/bpd": nll * self.nats_to_bpd}, prog_bar=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["degraded_epochs"] = self.degraded_epochs

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = [tuple(entry) for entry in checkpoint.get("degraded_epochs", [])]
        if len(saved) > len(self.degraded_epochs):  # a resume; testing best.ckpt keeps the later epochs' record
            self.degraded_epochs = saved

    def on_test_epoch_start(self) -> None:
        valid = self.trainer.datamodule.split("valid").to(self.device)
        prepared = self.ensemble.prepare(self.model, valid)
        if self._use_learned_weights(self.ensemble):
            prepared["effective_num_masks"] = self.mixture_weights.effective_num_masks()
        self.test_results = {f"test/ensemble/{key}": float(value) for key, value in prepared.items()}

    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        outputs = self.ensemble.log_prob(self.model, batch)
        for key, log_prob in outputs.items():
            name = "single_mask" if key == "mask_log_probs" else self._metric_name(key)
            self._accumulate_examples("test", name, -log_prob)

    def _metric_name(self, key: str) -> str:
        """Ensemble output -> metric: an unnormalised score never appears as plain ``nll``."""
        if key == "log_prob" and not self.ensemble.normalised:
            raise ValueError(f"ensemble {self.ensemble.name!r} is unnormalised but returned a 'log_prob'")
        return key.replace("log_prob", "nll")

    def on_test_epoch_end(self) -> None:
        means = self._reduced_means("test")
        single = means.pop("single_mask", None)  # (K,) test NLL of each mask on its own
        metrics = {f"test/{key}": float(value) for key, value in means.items()}
        for key in list(metrics):
            metrics[key.replace("nll", "bpd")] = metrics[key] * self.nats_to_bpd
        self.per_mask_nll = [] if single is None else single.tolist()
        if single is not None:
            metrics["test/single_mask_nll_mean"] = float(single.mean())
            metrics["test/single_mask_nll_std"] = float(single.std()) if len(single) > 1 else 0.0
            metrics["test/single_mask_nll_best"] = float(single.min())
        self.test_results.update(metrics)
        self.log_dict(self.test_results)


def _validation_ensemble(masks: MaskSchedule, model: MADE, seed: int) -> Mixture:
    """What validation scores: the model the objective trains (the normalised product of the bank's experts for
    ``poe``), else the mixture of ``val_num_masks`` masks (with the trained weights for ``learned_mixture``)."""
    if masks.objective == "poe":
        return ProductOfExperts(
            mask_source="bank",
            seed=seed,
            log_z_method=masks.val_log_z,
            num_importance_samples=masks.log_z_samples,
            ais_chains=masks.val_ais_chains,
            ais_temperatures=masks.val_ais_temperatures,
        )
    return Mixture(num_masks=masks.val_num_masks, mask_source=masks.validation_mask_source(), seed=seed)
