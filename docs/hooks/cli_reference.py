"""The command-line reference, generated: every console script of the package, each option from its own argparse
parser (made-train, a Hydra app, from its ``--help`` text)."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

HYDRA_SCRIPT = "made-train"


class _Parsed(Exception):
    """Raised in place of parsing, carrying the parser a script's ``main`` built."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


def scripts() -> dict[str, str]:
    """Console script name -> ``module:function``, from the installed package's entry points (pyproject.toml)."""
    points = importlib.metadata.distribution("made_exp").entry_points
    return {
        point.name: point.value for point in sorted(points, key=lambda p: p.name) if point.group == "console_scripts"
    }


def _entry(target: str):
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


@contextmanager
def _capturing() -> Iterator[None]:
    def capture(self: argparse.ArgumentParser, *args, **kwargs):
        raise _Parsed(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture):
        yield


def parser(name: str) -> argparse.ArgumentParser:
    """The argparse parser that console script ``name`` builds (its ``main``, stopped before it parses)."""
    with _capturing():
        try:
            _entry(scripts()[name])([])
        except _Parsed as parsed:
            return parsed.parser
    raise RuntimeError(f"{name}: its main() parsed no arguments with argparse")


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in parser._actions if not isinstance(action, argparse._HelpAction)]


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _row(action: argparse.Action) -> str:
    name = ", ".join(f"`{option}`" for option in action.option_strings) or f"`{action.dest}`"
    if action.nargs not in (None, 0) or (action.option_strings and action.nargs is None):
        metavar = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
        takes = f"`{metavar}`" + (" ..." if action.nargs in ("+", "*") else "")
    else:
        takes = ""
    if action.choices:
        takes += " (one of " + ", ".join(f"`{choice}`" for choice in action.choices) + ")"
    default = "" if action.default in (None, argparse.SUPPRESS, False) or not action.option_strings else action.default
    default_cell = f"`{_cell(default)}`" if default != "" else ""
    return f"| {name} | {takes} | {default_cell} | {_cell(action.help or '')} |"


def script_section(name: str) -> str:
    if name == HYDRA_SCRIPT:
        from made_exp.cli.train import usage

        return "\n".join(
            [
                f"## {name}",
                "A Hydra app: `KEY=VALUE` overrides of the config (see the configuration reference), `-m` for a "
                "sweep, and Hydra's own flags (`--cfg job`, `--hydra-help`, `--multirun`). Its `--help`:",
                "",
                "```text",
                usage(),
                "```",
                "",
            ]
        )
    built = parser(name)
    lines = [f"## {name}", _cell(built.description or ""), "", "```text", built.format_usage().strip(), "```", ""]
    lines += ["| argument | takes | default | what |", "|---|---|---|---|"]
    lines += [_row(action) for action in options(built)]
    return "\n".join(lines + [""])


def reference() -> str:
    return "\n".join(script_section(name) for name in scripts())
