"""The docs' generated text: a stated default is the composed config's value."""

import sys
from pathlib import Path

import pytest
from mkdocs.exceptions import PluginError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "hooks"))
import generated  # noqa: E402


def test_a_default_is_the_composed_value_spelled_as_an_override():
    text = "[[default model.hidden_sizes]], [[default optimizer.lr | optimizer=sgd]], [[default overwrite]]"
    assert generated.expand_defaults(text) == "`[500]`, `0.01`, `false`"


def test_an_unknown_key_fails_the_build():
    with pytest.raises(PluginError, match="no key 'model.no_such_key'"):
        generated.expand_defaults("[[default model.no_such_key]]")
