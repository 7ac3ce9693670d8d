"""MkDocs hook: text generated from the code, so that the docs cannot drift from it.

``[[default KEY]]`` in any page becomes KEY's value in made-train's config as composed (in code font), and
``[[default KEY | OVERRIDE ...]]`` its value with those overrides, e.g.
``[[default hydra.launcher.cpus_per_task | hydra/launcher=slurm]]``. An unknown key fails the build.

``[[config-reference]]``, ``[[cli-reference]]`` and ``[[results-json-reference]]`` become the reference pages'
tables (``config_reference``, ``cli_reference``, ``results_reference`` beside this file).
"""

from __future__ import annotations

import re
import sys
from functools import cache
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mkdocs.exceptions import PluginError
from omegaconf import DictConfig, ListConfig, OmegaConf

from made_exp.runs.config import CONFIG_DIR, register_configs

sys.path.insert(0, str(Path(__file__).resolve().parent))  # mkdocs loads a hook by path: its siblings by name
import cli_reference  # noqa: E402
import config_reference  # noqa: E402
import results_reference  # noqa: E402

DEFAULT = re.compile(r"\[\[default\s+([\w./-]+)\s*(?:\|\s*([^\]]*))?\]\]")
REFERENCES = {
    "[[config-reference]]": lambda: config_reference.reference(composed),
    "[[cli-reference]]": cli_reference.reference,
    "[[results-json-reference]]": results_reference.reference,
}


@cache
def composed(overrides: tuple[str, ...] = ()) -> DictConfig:
    """made-train's config composed with ``overrides``, the ``hydra`` node included."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def default_value(key: str, overrides: tuple[str, ...] = ()) -> str:
    """KEY's composed value, spelled as on the command line."""
    missing = object()
    value = OmegaConf.select(composed(overrides), key, default=missing)
    if value is missing:
        raise PluginError(f"[[default {key}]]: no key {key!r} in made-train's config (overrides: {list(overrides)})")
    if isinstance(value, DictConfig):
        raise PluginError(f"[[default {key}]]: {key!r} is a group of keys, not one value")
    return config_reference.spelled(OmegaConf.to_container(value) if isinstance(value, ListConfig) else value)


def expand_defaults(markdown: str) -> str:
    """Every ``[[default ...]]`` in ``markdown`` replaced by its value in code font."""
    return DEFAULT.sub(lambda m: f"`{default_value(m[1], tuple((m[2] or '').split()))}`", markdown)


def expand_references(markdown: str) -> str:
    """Every reference macro in ``markdown`` replaced by its generated Markdown."""
    for macro, generate in REFERENCES.items():
        if macro in markdown:
            markdown = markdown.replace(macro, generate())
    return markdown


def on_page_markdown(markdown: str, **_) -> str:
    return expand_defaults(expand_references(markdown))
