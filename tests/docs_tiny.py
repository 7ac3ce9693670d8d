"""Tiny settings for the commands the docs show, so that tests/test_docs.py runs every one in seconds.

``install_wrappers(folder)`` writes ``made-train``, ``made-bench`` and ``make`` into ``folder``; with ``folder``
first on PATH a documented command runs as written, but small:

- ``made-train`` gets ``trainer.max_epochs=2`` (4 where it extends a run with ``resume=``), one hidden layer of
  16 units (as many layers as asked), ``logger=csv`` unless a logger is named, the costly counts of the
  composed config capped (``CAPS``), and a sweep of more than ``MAX_JOBS`` jobs cut to its first values;
- ``made-bench`` only parses its arguments (tests/test_bench.py times it);
- ``make`` runs only ``MAKE_TARGETS``, on the checkout's Makefile, with ``.venv/bin`` holding these wrappers.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.prefix) / "bin"
EPOCHS = 2
RESUMED_EPOCHS = 4  # a resume= that sets the budget means "train on": more than EPOCHS
HIDDEN_UNITS = 16
MAX_JOBS = 4
# (key, largest value, (key, value) the cap applies under, or None)
CAPS = (
    ("masks.val_num_masks", 8, ("masks.schedule", "fresh")),
    ("ensemble.num_masks", 8, ("ensemble.mask_source", "fresh")),
    ("masks.log_z_samples", 32, ("masks.objective", "poe")),
    ("ensemble.num_importance_samples", 500, None),
    ("ensemble.ais_chains", 32, None),
    ("ensemble.ais_temperatures", 10, None),
    ("hydra.sweeper.n_trials", 2, None),
    ("hydra.sweeper.n_jobs", 2, None),
)
FORCED = ("trainer.max_epochs", "model.hidden_sizes")
NO_TRAINING_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "--shell-completion", "-sc")
MAKE_TARGETS = ("train", "sweep-local", "search-local")


def tiny_train_args(argv: list[str]) -> list[str]:
    """made-train's arguments ``argv`` with the tiny settings: the user's own values of the keys set here go."""
    if any(arg.split("=")[0] in NO_TRAINING_FLAGS for arg in argv):
        return argv
    flags, overrides = _split_flags(argv)
    parsed = {_key(arg): arg for arg in overrides}
    resumed = "resume" in parsed and "trainer.max_epochs" in parsed
    tiny = {
        "trainer.max_epochs": f"trainer.max_epochs={RESUMED_EPOCHS if resumed else EPOCHS}",
        "model.hidden_sizes": _tiny_hidden_sizes(parsed.get("model.hidden_sizes")),
    }
    if "logger" not in parsed:
        tiny["logger"] = "logger=csv"
    multirun = "-m" in flags or "--multirun" in flags
    config = _composed(flags, overrides)
    if config is not None:
        tiny.update(_capped(config, parsed))
        if multirun:
            unnamed = _unnamed(config, [key for key in tiny if key not in parsed])
            tiny.update(_fewer_jobs(config, parsed))
            tiny.update(unnamed)
    kept = [arg for arg in overrides if _key(arg) not in tiny]
    return flags + kept + list(tiny.values())


def _split_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """``argv`` as (Hydra's flags with their values, the overrides)."""
    flags, overrides, arguments = [], [], iter(argv)
    for arg in arguments:
        if arg.startswith("-"):
            flags.append(arg)
            if arg in ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn", "--experimental-rerun"):
                flags.append(next(arguments, ""))
        else:
            overrides.append(arg)
    return flags, overrides


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _values(override: str) -> list[str] | None:
    """The values of a comma sweep ``key=a,b,c`` (None for a single value or another sweep syntax)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_override(override)
    if not parsed.is_sweep_override() or parsed.is_range_sweep() or parsed.is_interval_sweep():
        return None
    if parsed.is_choice_sweep() and override.split("=", 1)[1].startswith("choice("):
        return None
    return list(parsed.sweep_string_iterator())


def _tiny_hidden_sizes(override: str | None) -> str:
    """``model.hidden_sizes`` as HIDDEN_UNITS per layer, a sweep over depths kept as a sweep over depths."""
    values = (_values(override) or [override.split("=", 1)[1]]) if override else ["[500]"]
    depths = sorted({len(yaml.safe_load(value) or [0]) for value in values})
    return "model.hidden_sizes=" + ",".join("[" + ",".join([str(HIDDEN_UNITS)] * depth) + "]" for depth in depths)


def _composed(flags: list[str], overrides: list[str]):
    """made-train's config under ``overrides`` (a sweep at its first value), or None when it does not compose
    here (another config dir, or a command that fails on purpose)."""
    if any(flag in ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn") for flag in flags):
        return None
    first = []
    for override in overrides:
        values = _values(override)
        if values is None and "(" in override.split("=", 1)[-1]:
            continue  # range(), interval(), choice(): Optuna's or Hydra's sweep syntax
        first.append(f"{override.split('=', 1)[0]}={values[0]}" if values else override)
    try:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        from made_exp.runs.config import CONFIG_DIR, register_configs

        register_configs()
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name="train", overrides=first, return_hydra_config=True)
    except Exception:
        return None


def _capped(config, parsed: dict[str, str]) -> dict[str, str]:
    """An override for each of CAPS whose value, as composed, is larger than its cap."""
    from omegaconf import OmegaConf

    capped = {}
    for key, cap, condition in CAPS:
        if condition and str(OmegaConf.select(config, condition[0], default=None)) != condition[1]:
            continue
        value = OmegaConf.select(config, key, default=None, throw_on_resolution_failure=False)
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value > cap
            and _values(parsed.get(key, "x=0")) is None
        ):
            capped[key] = f"{key}={cap}"
    return capped


def _unnamed(config, keys: list[str]) -> dict[str, str]:
    """An override leaving ``keys`` out of the sweep's job dir names, so that they read as without these settings."""
    key = "hydra.job.config.override_dirname.exclude_keys"
    excluded = dict.fromkeys([*config.hydra.job.config.override_dirname.exclude_keys, *keys])
    return {key: f"{key}=[{','.join(excluded)}]"}


def _fewer_jobs(config, parsed: dict[str, str]) -> dict[str, str]:
    """Overrides cutting the basic sweeper's grid (command line and ``hydra.sweeper.params``) to MAX_JOBS jobs
    or fewer, dropping the last values of the longest lists; an Optuna search is capped by CAPS instead."""
    from omegaconf import OmegaConf

    grid = {key: values for key, values in ((k, _values(v)) for k, v in parsed.items()) if values}
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    if "n_trials" not in config.hydra.sweeper:
        for key, value in params.items():
            values = _values(f"{key}={value}")
            if key not in parsed and values:
                grid[key] = values
    cut = {}
    while math.prod(len(values) for values in grid.values()) > MAX_JOBS:
        key = max(grid, key=lambda k: len(grid[k]))
        if len(grid[key]) <= 2:
            break
        grid[key] = grid[key][:-1]
        cut[key] = f"{key}=" + ",".join(grid[key])
    return cut


def bench_arguments_parse(argv: list[str]) -> None:
    """Parse made-bench's arguments ``argv`` as made-bench does (a bad one exits 2), then stop before timing."""
    import argparse

    from made_exp.cli import bench

    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        parse_args(self, args, namespace)
        print(f"made-bench {' '.join(argv)}: arguments parse; not timed here (tests/test_bench.py times it)")
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = parse_then_stop
    bench.main(argv)


def run_make(argv: list[str]) -> int:
    """Run the checkout's Makefile for MAKE_TARGETS only, in the working directory, its ``.venv/bin`` being
    the folder of these wrappers; any other target is refused (it installs, runs the suite, or needs a cluster)."""
    import shutil
    import subprocess

    targets = [arg for arg in argv if not arg.startswith("-") and "=" not in arg]
    refused = [target for target in targets if target not in MAKE_TARGETS]
    if refused or not targets:
        print(
            f"make {' '.join(argv)}: tests/test_docs.py runs only make {', '.join(MAKE_TARGETS)}; mark this block "
            "<!-- docs-test: skip: <why> --> if it cannot run here",
            file=sys.stderr,
        )
        return 2
    wrappers = Path(sys.argv[0]).resolve().parent
    others = [folder for folder in os.environ["PATH"].split(os.pathsep) if Path(folder).resolve() != wrappers]
    venv = Path(".venv")
    made_here = not venv.exists()
    if made_here:
        venv.mkdir()
        (venv / "bin").symlink_to(wrappers)
    try:
        return subprocess.call(
            [shutil.which("make", path=os.pathsep.join(others)), "-f", str(REPO / "Makefile"), *argv]
        )
    finally:
        if made_here:
            (venv / "bin").unlink()
            venv.rmdir()


WRAPPERS = {
    "made-train": "import os, sys\nfrom docs_tiny import VENV_BIN, tiny_train_args\n"
    "os.execv(str(VENV_BIN / 'made-train'), ['made-train', *tiny_train_args(sys.argv[1:])])\n",
    "made-bench": "import sys\nfrom docs_tiny import bench_arguments_parse\nbench_arguments_parse(sys.argv[1:])\n",
    "make": "import sys\nfrom docs_tiny import run_make\nsys.exit(run_make(sys.argv[1:]))\n",
}


def install_wrappers(folder: Path) -> Path:
    """Write WRAPPERS into ``folder`` as executables run by this interpreter; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in WRAPPERS.items():
        script = folder / name
        header = f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        script.write_text(header + body)
        script.chmod(0o755)
    return folder


__all__ = ["install_wrappers", "tiny_train_args", "bench_arguments_parse", "run_make", "MAKE_TARGETS"]
