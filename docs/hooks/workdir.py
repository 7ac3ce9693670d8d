"""MkDocs hook: the build runs the markdown-exec blocks in a fresh temporary directory, never in the checkout.

The build changes into that directory before any page is read and back, deleting it, once the site is written
(or the build failed). Paths in mkdocs.yml are resolved before, so they stay relative to the checkout.
"""

from __future__ import annotations

import os
import tempfile

_state: dict[str, object] = {}


def on_pre_build(config, **_) -> None:
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
