"""Every config file composes, and invalid configs fail before anything is built."""

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from conftest import compose_train
from made_exp.config import ConfigError, validate_config
from made_exp.train import CONFIG_DIR

GROUPS = sorted(p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir())


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_config_file_composes(group, option):
    cfg = compose_train([f"{group}={option}"])
    container = OmegaConf.to_container(cfg, resolve=False)
    assert container["model"]["_target_"] == "made_exp.made.MADE"
    validate_config(cfg)


def test_masks_group_sets_the_model_bank_and_test_ensemble():
    cfg = compose_train(["masks=fresh"])
    assert cfg.masks.schedule == "fresh" and cfg.ensemble.mask_source == "fresh"
    assert compose_train(["masks=cycle", "model.num_masks=32"]).masks.val_num_masks == 32
    assert compose_train(["masks=connectivity"]).model.resample == "connectivity"


def test_typo_in_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException):
        compose_train(["model.hiden_sizes=[10]"])


def test_wrong_type_fails_at_composition():
    with pytest.raises(ConfigCompositionException):
        compose_train(["model.num_masks=many"])


@pytest.mark.parametrize("override,key", [
    ("model.activation=gelu", "model.activation"),
    ("model.num_masks=0", "model.num_masks"),
    ("model.hidden_sizes=[]", "model.hidden_sizes"),
    ("model.hidden_sizes=[100,-1]", "model.hidden_sizes"),
    ("masks.schedule=sometimes", "masks.schedule"),
    ("model.direct_connection=skip", "model.direct_connection"),
])
def test_invalid_value_names_key_and_choices(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(compose_train([override]))
