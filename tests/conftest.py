"""Shared test helpers."""

import os

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from made_exp.core.made import MADE
from made_exp.runs.config import CONFIG_DIR, register_configs


def random_made(input_dim: int, num_masks: int = 3, seed: int = 0, **kwargs) -> MADE:
    """A float64 MADE with every parameter drawn from N(0, 1), so the masks' models differ visibly."""
    torch.manual_seed(seed)
    model = MADE(input_dim, kwargs.pop("hidden_sizes", [32]), num_masks=num_masks, seed=seed, **kwargs).double()
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter)
    return model


def compose_train(overrides: list[str], with_hydra: bool = True) -> DictConfig:
    """made-train's config composed with ``overrides``, outside a Hydra run; ``with_hydra``: keep the
    ``hydra`` node (leave it out to pass the config to ``train``, which resolves every key)."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=with_hydra)


@pytest.fixture(scope="session")
def built_site(tmp_path_factory):
    """The site built strictly once per session (tests/docs_site.py): (the finished process, the site dir).
    Skips, saying why, without the data the tutorials train on."""
    if not os.environ.get("MADE_DATA_DIR"):
        pytest.skip("set MADE_DATA_DIR to the paper's data (../shared/data): the tutorials train on it")
    from docs_site import build_site

    site = tmp_path_factory.mktemp("site")
    return build_site(site), site
