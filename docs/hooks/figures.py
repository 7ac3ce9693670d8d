"""MkDocs hook: the committed experiment figures (``experiments/**/*.png``) become files of the site, at the same
path, so that the Results pages show them straight from ``experiments/`` (``../experiments/paper/x.png`` from
``docs/results/``) and nothing is copied into ``docs/`` by hand."""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
FIGURES = "experiments"


def figure_files(config: MkDocsConfig) -> list[File]:
    """One site file per PNG under ``experiments/``, its URI the path from the checkout's root."""
    return [
        File.generated(config, path.relative_to(ROOT).as_posix(), abs_src_path=str(path))
        for path in sorted((ROOT / FIGURES).rglob("*.png"))
    ]


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for file in figure_files(config):
        files.append(file)
    return files
