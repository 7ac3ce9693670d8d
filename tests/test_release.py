"""What a release needs to be adopted: a licence, a citation, a changelog, one version, dependency ranges, lint."""

import datetime
import re
import shlex
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import made_exp

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
EXTRAS = [r for extra in PROJECT["optional-dependencies"].values() for r in extra]
REQUIREMENTS = [Requirement(r) for r in PROJECT["dependencies"] + EXTRAS]
LINTED = ["src", "tests", "experiments", "docs/hooks"]


def pins() -> dict[str, str]:
    """constraints.txt as {canonical name: pinned version}."""
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pairs = [line.split("==") for line in lines if line.strip() and not line.startswith("#")]
    assert all(len(pair) == 2 for pair in pairs), "constraints.txt pins each package with =="
    return {canonicalize_name(name): version for name, version in pairs}


def test_the_version_is_written_once_as_made_exp_version():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "made_exp.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", made_exp.__version__)


def test_the_package_records_its_own_version():
    from made_exp.runs.provenance import package_version

    assert package_version() == made_exp.__version__  # not an editable install's stale metadata


@pytest.mark.parametrize("requirement", REQUIREMENTS, ids=str)
def test_dependencies_are_ranges_that_admit_the_tested_version(requirement):
    assert not any(spec.operator in ("==", "===") for spec in requirement.specifier), f"{requirement} is a pin"
    tested = pins().get(canonicalize_name(requirement.name))
    if tested is not None:  # setuptools (and pip) are left out of pip freeze
        assert requirement.specifier.contains(tested, prereleases=True), f"{requirement} refuses the tested {tested}"


def test_constraints_pin_every_dependency_but_not_made_exp():
    pinned = pins()
    assert "made-exp" not in pinned
    others = [r for r in REQUIREMENTS if canonicalize_name(r.name) not in ("setuptools", "made-exp")]  # made_exp[...]
    missing = [r.name for r in others if canonicalize_name(r.name) not in pinned]
    assert not missing, f"constraints.txt does not pin {sorted(missing)}"
    assert pinned["torch"] == "2.14.1" and pinned["torchvision"] == "0.29.1"  # the builds `make install` takes


def test_make_install_uses_the_constraints():
    install = re.search(r"^install:.*?\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)[1]
    assert '-c constraints.txt -e ".[dev]"' in install


def test_license_is_mit_and_declared_in_the_metadata():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the made_exp authors" in text
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]


def test_metadata_names_authors_urls_classifiers_keywords():
    assert PROJECT["authors"] and PROJECT["urls"] and PROJECT["keywords"]
    assert "Typing :: Typed" in PROJECT["classifiers"]
    assert (ROOT / "src" / "made_exp" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["made_exp"]


def test_citation_cites_this_version_and_the_made_paper():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert {"message", "title", "authors", "version", "date-released"} <= cff.keys()
    assert cff["version"] == made_exp.__version__
    datetime.date.fromisoformat(cff["date-released"])  # quoted: a YAML date would not be a CFF string
    (paper,) = [ref for ref in cff["references"] if "MADE" in ref["title"]]
    assert paper["type"] == "conference-paper" and paper["year"] == 2015
    assert (paper["volume"], paper["start"], paper["end"]) == (37, 881, 889)
    assert [a["family-names"] for a in paper["authors"]] == ["Germain", "Gregor", "Murray", "Larochelle"]


def test_changelog_has_this_version_and_the_site_includes_it():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert f"## [{made_exp.__version__}] - {cff['date-released']}" in changelog
    assert '--8<-- "CHANGELOG.md"' in (ROOT / "docs" / "changelog.md").read_text()


def test_make_lint_and_pre_commit_run_ruff_over_the_same_folders():
    makefile = (ROOT / "Makefile").read_text()
    linted = re.search(r"^LINTED := (.*)$", makefile, re.M)[1].split()
    lint = re.search(r"^lint:.*?\n((?:\t.*\n)+)", makefile, re.M)[1]
    assert linted == LINTED
    assert "ruff check $(LINTED)" in lint and "ruff format --check $(LINTED)" in lint
    hooks = [
        hook
        for repo in yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"]
        for hook in repo["hooks"]
    ]
    assert all(hook["language"] == "system" for hook in hooks)  # the venv's ruff: nothing to download
    assert sorted(shlex.split(hook["entry"])[1:] for hook in hooks) == [["check"], ["format", "--check"]]
    assert all(hook["files"] == "^(" + "|".join(LINTED) + ")/" for hook in hooks)


def test_ci_lints_after_install_and_before_the_tests():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert (
        lines.index("make install")
        < lines.index("make lint")
        < next(i for i, line in enumerate(lines) if line.endswith("make test"))
    )
