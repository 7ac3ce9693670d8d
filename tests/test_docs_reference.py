"""The generated reference pages cover every config group, option and key, every CLI argument and every field of
results.json (docs/hooks/config_reference.py, cli_reference.py, results_reference.py)."""

import dataclasses
import enum
import json
import sys
import typing
from functools import cache
from pathlib import Path

import pytest
import tomllib
from omegaconf import OmegaConf

from conftest import compose_train
from made_exp.runs.config import CONFIG_DIR, RANGES, SCHEMAS

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY / "docs" / "hooks"))
import cli_reference  # noqa: E402
import generated  # noqa: E402
import results_reference  # noqa: E402


@cache
def config_page() -> str:
    return generated.expand_references("[[config-reference]]")


@cache
def cli_page() -> str:
    return generated.expand_references("[[cli-reference]]")


def documented_keys() -> set[str]:
    return {line.split("`")[1] for line in config_page().splitlines() if line.startswith("| `")}


@pytest.mark.parametrize("page", ["config", "cli", "results-json"])
def test_each_reference_page_is_generated(page):
    assert f"[[{page}-reference]]" in (REPOSITORY / "docs" / "reference" / f"{page}.md").read_text()


def test_every_group_and_option_of_conf_has_a_section():
    conf = Path(CONFIG_DIR)
    groups = [path for path in conf.iterdir() if path.is_dir() and path.name != "hydra"]
    groups += [conf / "hydra" / "launcher", conf / "hydra" / "sweeper"]
    for group in groups:
        name = str(group.relative_to(conf))
        assert f"\n## {name}\n" in config_page()
        for option in group.glob("*.yaml"):
            assert f"\n### {name}={option.stem}\n" in config_page()


def test_every_field_of_every_schema_is_a_documented_key():
    keys = documented_keys()
    leaves = {key.rsplit(".", 1)[-1] for key in keys}
    nodes = {part for key in keys for part in key.split(".")[:-1]}  # groups and nested nodes (masks.smc)
    for name, schema in SCHEMAS.items():
        missing = {field.name for field in dataclasses.fields(schema)} - leaves - nodes
        assert not missing, f"schema {name}: {missing} not in the configuration reference"


def test_every_key_of_the_default_config_and_of_each_launcher_is_documented():
    for overrides in ([], ["hydra/launcher=slurm"], ["hydra/launcher=packed"], ["hydra/sweeper=optuna_tpe"]):
        cfg = compose_train(overrides)
        for _parent, _name, full in generated.config_reference._leaves(cfg, ""):
            if not full.startswith("hydra.") or full.startswith(("hydra.launcher.", "hydra.sweeper.")):
                assert full in documented_keys(), f"{full} ({overrides}) is not in the configuration reference"


def test_ranges_and_choices_are_stated():
    rows = {line.split("`")[1]: line for line in config_page().splitlines() if line.startswith("| `")}
    for key, (lowest, inclusive) in RANGES.items():
        if key in rows:
            assert f"| {'>=' if inclusive else '>'} {lowest} |" in rows[key], key
    assert set(RANGES) <= set(rows)
    for schema in SCHEMAS.values():
        for field_name, annotation in typing.get_type_hints(schema).items():
            choices = [a for a in (annotation, *typing.get_args(annotation)) if isinstance(a, type)]
            for choice in (c for c in choices if issubclass(c, enum.Enum)):
                assert ", ".join(f"`{member.value}`" for member in choice) in config_page(), field_name


def test_a_default_is_the_composed_value():
    rows = {line.split("`")[1]: line for line in config_page().splitlines() if line.startswith("| `")}
    cfg = compose_train([])
    assert f"| `{cfg.data.minibatches_per_step}` |" in rows["data.minibatches_per_step"]
    assert "| `${seeds.evaluation}` |" in rows["module.evaluation_seed"]  # an interpolation, as written


def console_scripts() -> dict[str, str]:
    return tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_console_script_has_a_section():
    assert set(cli_reference.scripts()) == set(console_scripts())
    for name in console_scripts():
        assert f"\n## {name}\n" in "\n" + cli_page()


@pytest.mark.parametrize("name", sorted(set(console_scripts()) - {cli_reference.HYDRA_SCRIPT}))
def test_every_argparse_argument_of_a_script_is_documented(name):
    section = cli_page().split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
    for action in cli_reference.options(cli_reference.parser(name)):
        for spelling in action.option_strings or [action.dest]:
            assert f"`{spelling}`" in section, f"{name} {spelling}"
        if action.help:
            assert action.help.split("\n")[0][:40] in section


def test_made_train_section_lists_every_config_group():
    section = cli_page().split("## made-train\n", 1)[1]
    for group in Path(CONFIG_DIR).iterdir():
        if group.is_dir() and group.name != "hydra":
            assert f"  {group.name}: " in section


@pytest.fixture(scope="module")
def real_records(tmp_path_factory) -> tuple[dict, dict]:
    """A tiny run's results.json, and made-eval's file for it under the product of experts."""
    from made_exp.cli.evaluate import main as made_eval
    from made_exp.lightning.training import train
    from made_exp.runs.rundir import RunDir

    run_dir = tmp_path_factory.mktemp("run")
    overrides = ["data=synthetic", "model.hidden_sizes=[8]", "trainer.max_epochs=1", "logger=none"]
    cfg = compose_train([*overrides, "module.num_samples=0", f"paths.output_dir={run_dir}"], with_hydra=False)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    train(cfg)
    made_eval([str(run_dir), "--ensemble", "poe", "--accelerator", "cpu"])
    return json.loads(RunDir(run_dir).results.read_text()), json.loads(RunDir(run_dir).evaluation("poe").read_text())


def test_every_field_of_a_real_results_json_is_described_and_no_other(real_records):
    results, evaluation = real_records
    assert set(results) == set(results_reference.RESULTS)
    assert set(evaluation) == set(results_reference.EVALUATION)
    for name in [*results["metrics"], *evaluation["metrics"]]:
        assert results_reference.documented(name), f"metric {name} is not described in results-json.md"


def test_the_page_says_what_a_wheel_records():
    page = generated.expand_references("[[results-json-reference]]")
    assert "`unknown` when made_exp runs from an installed wheel" in page and "`made_exp_version`" in page
