"""Every config file composes, and invalid configs fail before anything is built."""

from pathlib import Path

import hydra
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from conftest import compose_train
from made_exp.runs.config import CONFIG_DIR, RANGES, ConfigError, compose_ensemble, validate_config

GROUPS = sorted(p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir())


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_config_file_composes(group, option):
    cfg = compose_train([f"{group}={option}"])
    container = OmegaConf.to_container(cfg, resolve=False)
    assert container["model"]["_target_"] == "made_exp.core.made.MADE"
    validate_config(cfg)


@pytest.mark.parametrize("group,option", [(g, o) for g in ("data", "experiment") for o in options(g)])
def test_every_data_option_groups_8_minibatches_per_step_by_default(group, option):
    """The data group's schema used to override train.yaml's 8 with 1, so a plain made-train ran ungrouped."""
    assert compose_train([f"{group}={option}"]).data.minibatches_per_step == 8


@pytest.mark.parametrize("data", options("data"))
def test_an_explicit_minibatches_per_step_wins(data):
    assert compose_train([f"data={data}", "data.minibatches_per_step=3"]).data.minibatches_per_step == 3


def test_masks_group_sets_the_model_bank_and_test_ensemble():
    cfg = compose_train(["masks=fresh"])
    assert cfg.masks.schedule == "fresh" and cfg.ensemble.mask_source == "fresh"
    assert compose_train(["masks=cycle", "model.num_masks=32"]).masks.val_num_masks == 32
    assert compose_train(["masks=connectivity"]).model.resample == "connectivity"


@pytest.mark.parametrize("masks", ["single", "cycle"])
def test_a_bank_of_k_masks_validates_on_the_mixture_it_is_tested_on(masks):
    """Early stopping and a search's val/best_nll rank the number the test reports: the K-mask mixture."""
    cfg = compose_train([f"masks={masks}", "model.num_masks=8"])
    assert cfg.masks.val_num_masks == 8 and cfg.ensemble.num_masks is None  # None: every bank mask


def test_typo_in_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException):
        compose_train(["model.hiden_sizes=[10]"])


def test_wrong_type_fails_at_composition():
    with pytest.raises(ConfigCompositionException):
        compose_train(["model.num_masks=many"])


@pytest.mark.parametrize(
    "override,choices",
    [
        ("model.activation=gelu", "relu, tanh, sigmoid"),
        ("model.direct_connection=skip", "none, output, full"),
        ("masks.schedule=sometimes", "cycle, fresh"),
        ("trainer.precision=foo", "32-true"),
        ("matmul_precision=fastest", "highest, high, medium"),
    ],
)
def test_value_outside_its_choices_fails_at_composition_naming_them(override, choices):
    with pytest.raises(ConfigCompositionException) as error:
        compose_train([override])
    assert choices in str(error.value.__cause__)


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["model.num_masks=0"], "model.num_masks"),
        (["model.hidden_sizes=[]"], "model.hidden_sizes"),
        (["model.hidden_sizes=[100,-1]"], "model.hidden_sizes"),
        (["optimizer.lr=0"], "optimizer.lr"),
        (["optimizer.lr=-0.1"], "optimizer.lr"),
        (["data.batch_size=0"], "data.batch_size"),
        (["data.eval_batch_size=0"], "data.eval_batch_size"),
        (["data.minibatches_per_step=0"], "data.minibatches_per_step"),
        (["trainer.max_epochs=-5"], "trainer.max_epochs"),
        (["module.lr_decay=0"], "module.lr_decay"),
        (["ensemble=poe", "ensemble.num_importance_samples=0"], "ensemble.num_importance_samples"),
        (["ensemble=poe", "ensemble.ais_temperatures=1"], "ensemble.ais_temperatures"),
        (["seed=-1"], "seed"),
    ],
)
def test_value_outside_its_range_names_the_key_and_the_bound(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + "=.* is not allowed; it must be"):
        validate_config(compose_train(overrides))


def test_every_range_names_a_key_of_a_composed_config():
    configs = [compose_train(["ensemble=poe"]), compose_train(["ensemble=learned_mixture"])]
    for key in RANGES:
        assert any(OmegaConf.select(cfg, key, default="absent") != "absent" for cfg in configs), key


def test_poe_by_ais_composes_validates_and_refuses_zero_chains_in_one_line():
    cfg = compose_train(["ensemble=poe", "ensemble.log_z_method=ais"])
    validate_config(cfg)
    strategy = hydra.utils.instantiate(cfg.ensemble)
    assert strategy.log_z_method == "ais"
    assert (strategy.ais_chains, strategy.ais_temperatures, strategy.ais_schedule) == (1000, 100, "linear")
    with pytest.raises(ConfigError) as error:
        validate_config(compose_train(["ensemble=poe", "ensemble.log_z_method=ais", "ensemble.ais_chains=0"]))
    assert str(error.value) == "ensemble.ais_chains=0 is not allowed; it must be >= 1"
    with pytest.raises(ConfigCompositionException):
        compose_train(["ensemble=poe", "ensemble.ais_schedule=cosine"])


def test_made_eval_composes_and_checks_the_ensemble_like_made_train():
    assert compose_ensemble("poe", ["num_importance_samples=5"]).num_importance_samples == 5
    with pytest.raises(ConfigError, match="ensemble.num_importance_samples"):
        compose_ensemble("poe", ["num_importance_samples=0"])
    with pytest.raises(ConfigCompositionException):
        compose_ensemble("poe", ["log_z_method=guess"])


def test_fresh_evaluation_masks_follow_the_runs_seed():
    cfg = compose_train(["seed=3", "masks=fresh"], with_hydra=False)
    assert cfg.seeds.evaluation == 3 and cfg.ensemble.seed == 3 and cfg.module.evaluation_seed == 3
    assert compose_ensemble("mixture", []).seed == 1234  # made-eval alone; a run's own seed replaces it


@pytest.mark.parametrize("objective", ["poe", "learned_mixture"])
def test_whole_bank_objectives_compose_and_refuse_fresh_masks(objective):
    cfg = compose_train([f"masks={objective}_objective"])
    validate_config(cfg)
    assert cfg.masks.objective == objective and cfg.masks.schedule == "cycle"
    assert cfg.ensemble._target_.endswith("ProductOfExperts" if objective == "poe" else "Mixture")
    with pytest.raises(ConfigError, match="masks.schedule=cycle"):
        validate_config(compose_train([f"masks={objective}_objective", "masks.schedule=fresh"]))
