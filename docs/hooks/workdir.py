"""MkDocs hook: the build runs the markdown-exec blocks in a fresh temporary directory, never in the checkout.

The build changes into that directory before any page is read and back, deleting it, once the site is written
(or the build failed). Paths in mkdocs.yml are resolved before, so they stay relative to the checkout, and so is
a relative ``$MADE_DATA_DIR`` (``MADE_DATA_DIR=../shared/data make docs``): it is made absolute first.
"""

from __future__ import annotations

import os
import tempfile

_state: dict[str, object] = {}


def on_pre_build(config, **_) -> None:
    if os.environ.get("MADE_DATA_DIR"):
        os.environ["MADE_DATA_DIR"] = os.path.abspath(os.environ["MADE_DATA_DIR"])
    workdir = tempfile.TemporaryDirectory(prefix="made-docs-")
    _state.update(previous=os.getcwd(), workdir=workdir)
    os.chdir(workdir.name)


def on_post_build(config, **_) -> None:
    _restore()


def on_build_error(error, **_) -> None:
    _restore()


def _restore() -> None:
    if "workdir" in _state:
        os.chdir(_state.pop("previous"))
        _state.pop("workdir").cleanup()
