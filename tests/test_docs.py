"""The docs are tests: every ```bash and plain ```python block of README.md and docs/ runs (tiny settings:
tests/docs_tiny.py), the site builds strictly (its tutorials run), and the README is short and quotes the
committed results."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import traceback
from pathlib import Path

import pytest

from docs_blocks import REPO, Block, doc_pages, runnable_blocks
from docs_tiny import VENV_BIN, install_wrappers, tiny_train_args

DATA_DIR = os.environ.get("MADE_DATA_DIR")
needs_data = pytest.mark.skipif(DATA_DIR is None, reason="set MADE_DATA_DIR to the paper's data (../shared/data)")
BLOCK_TIMEOUT_S = 300
README_LIMIT_BYTES = 8 * 1024
BLOCKS = {page: runnable_blocks(page) for page in doc_pages()}
PAGES_TO_RUN = [page for page, blocks in BLOCKS.items() if any(block.skip_reason is None for block in blocks)]
MARKED_SKIPPED = [block for blocks in BLOCKS.values() for block in blocks if block.skip_reason]


@pytest.fixture(scope="module")
def docs_env(tmp_path_factory) -> dict[str, str]:
    """The environment of a documented command: the tiny-settings wrappers first on PATH, then the venv."""
    wrappers = install_wrappers(tmp_path_factory.mktemp("docs_bin"))
    env = {key: value for key, value in os.environ.items() if key not in ("MADE_LOG_DIR", "MADE_RUN_DIR")}
    env.update(
        PATH=os.pathsep.join([str(wrappers), str(VENV_BIN), env.get("PATH", "")]),
        WANDB_MODE="offline",
        MPLBACKEND="Agg",
        OMP_NUM_THREADS="1",  # one torch thread a command: on a busy 2-core machine two threads can run 25x slower
        MADE_DATA_DIR=os.path.abspath(DATA_DIR) if DATA_DIR else "",  # the blocks run elsewhere: ../shared/data
    )
    return env


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("page", PAGES_TO_RUN)
def test_page_blocks_run(page, docs_env, tmp_path, monkeypatch):
    """The page's bash and python blocks, in order, in one fresh directory (python blocks in one namespace)."""
    monkeypatch.chdir(tmp_path)
    for key, value in docs_env.items():
        monkeypatch.setenv(key, value)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in BLOCKS[page]:
        if block.skip_reason is None:
            (_run_bash if block.lang == "bash" else _run_python)(block, tmp_path, docs_env, namespace)


def _run_bash(block: Block, workdir: Path, env: dict[str, str], _namespace) -> None:
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.code],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(
            f"{block.page}:{block.line}: bash block still running after {BLOCK_TIMEOUT_S} s\n{block.code}"
            f"--- output ---\n{_tail(expired.output)}"
        )
    if done.returncode != 0:
        pytest.fail(
            f"{block.page}:{block.line}: bash block exited with status {done.returncode}\n{block.code}"
            f"--- output ---\n{_tail(done.stdout)}"
        )


def _run_python(block: Block, _workdir, _env, namespace: dict[str, object]) -> None:
    try:
        exec(compile(block.code, f"{block.page}:{block.line}", "exec"), namespace)
    except Exception:
        pytest.fail(f"{block.page}:{block.line}: python block failed\n{block.code}--- {traceback.format_exc(limit=-3)}")


def _tail(output: str | bytes | None, lines: int = 40) -> str:
    text = output.decode(errors="replace") if isinstance(output, bytes) else output or ""
    return "\n".join(text.splitlines()[-lines:])


@pytest.mark.parametrize("block", MARKED_SKIPPED, ids=[f"{block.page}:{block.line}" for block in MARKED_SKIPPED])
def test_marked_block_is_skipped(block):
    pytest.skip(f"{block.page}:{block.line}: {block.skip_reason}")


@pytest.mark.slow
def test_site_builds_strictly(built_site):
    """``mkdocs build --strict``: no broken link or reference, every markdown-exec block ran."""
    done, site = built_site
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{_tail(done.stdout, 60)}"
    assert (site / "index.html").is_file()


def test_the_build_runs_markdown_exec_blocks_outside_the_checkout(tmp_path, monkeypatch):
    import sys

    sys.path.insert(0, str(REPO / "docs" / "hooks"))
    import workdir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MADE_DATA_DIR", "data")  # relative, as in MADE_DATA_DIR=../shared/data make docs
    workdir.on_pre_build(config=None)
    inside = Path.cwd()
    assert os.environ["MADE_DATA_DIR"] == str(tmp_path / "data")
    workdir.on_post_build(config=None)
    assert inside != tmp_path and REPO not in inside.parents and not inside.exists()
    assert Path.cwd() == tmp_path


# The README


def test_readme_is_at_most_8_kb():
    size = len((REPO / "README.md").read_bytes())
    assert size <= README_LIMIT_BYTES, f"README.md is {size} bytes, over {README_LIMIT_BYTES}"


def _readme_table(heading: str) -> list[list[str]]:
    """The rows of the first table under README's ``## heading``, header and rule left out."""
    section = (REPO / "README.md").read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip().strip("*") for cell in row.strip("|").split("|")] for row in rows[2:]]


def _mean_std(text: str) -> tuple[str, str]:
    mean, _, std = text.replace("−", "-").partition(" ± ")
    return mean, std


def test_readme_paper_results_are_the_committed_ones():
    """Each row of the README's paper table is a row of experiments/paper/report.csv (mean ± std over seeds,
    the paper's figure) or, for the paper-size MNIST model, a committed run's results.json."""
    report = list(csv.DictReader((REPO / "experiments/paper/report.csv").open()))
    rows = _readme_table("Results")
    assert len(rows) >= 12
    for dataset, column, ours, paper in (row[:4] for row in rows):
        mean, std = _mean_std(ours)
        if dataset == "binarized_mnist":
            assert _mnist_run_reaches(mean), f"README: no committed binarized_mnist run has test NLL {mean}"
            continue
        matches = [
            row
            for row in report
            if (row["dataset"], row["paper_column"]) == (dataset, column)
            and f"{float(row['test_nll_mean']):.2f}" == mean
            and f"{float(row['test_nll_std']):.2f}" == std
        ]
        assert matches, f"README: {dataset} / {column} {ours} is no row of experiments/paper/report.csv"
        assert float(matches[0]["paper_nll"]) == float(paper), f"README: {dataset} / {column} paper figure {paper}"


def _mnist_run_reaches(test_nll: str) -> bool:
    for path in (REPO / "experiments/paper/results").rglob("results.json"):
        results = json.loads(path.read_text())
        if results["config"]["data"]["name"] == "binarized_mnist":
            if f"{results['metrics']['test/nll']:.2f}" == test_nll:
                return True
    return False


def _paired_rows() -> dict[tuple[str, str, str, str], list[str]]:
    """The committed paired comparisons, by (dataset, training, K, tested as)."""
    rows = {}
    for name in ("experiments/objectives_uci/paired.md", "experiments/objectives_mnist/cpu_long/paired.md"):
        for line in (REPO / name).read_text().splitlines():
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if line.startswith("|") and len(cells) == 8:
                rows.setdefault(tuple(cells[:4]), cells)
    return rows


def test_readme_mixture_against_product_is_the_committed_comparison():
    """Each row of the README's findings table: the bank's mixture, its normalised product (log Z by AIS) and
    their paired difference, as the committed paired.md files give them."""
    paired = _paired_rows()
    rows = _readme_table("Mixture against product of experts")
    assert len(rows) >= 4
    for dataset, k, mixture, product, difference in (row[:5] for row in rows):
        key = (dataset.split(" ")[0], "bank, Jensen", k)
        assert paired[(*key, "mixture")][4] == mixture.replace("−", "-"), f"README: {dataset} K={k} mixture"
        assert paired[(*key, "poe (AIS)")][4] == product.replace("−", "-"), f"README: {dataset} K={k} product"
        mean, std = (float(value) for value in _mean_std(paired[(*key, "poe (AIS)")][6]))
        assert difference.replace("−", "-") == f"{mean:.2f} ± {std:.2f}", f"README: {dataset} K={k} difference"


def test_readme_pruning_numbers_are_the_committed_measurement():
    """The README's pruning lines: the wall time ratios and each pruned condition's best val/best_nll (mean ± std
    over the sampler seeds) as experiments/search_pruning/summary.csv gives them."""
    readme = " ".join((REPO / "README.md").read_text().split())
    line = r"takes (\S+) of the wall time, but its best `val/best_nll` is (\S+ ± \S+) against (\S+ ± \S+)"
    found = re.search(line, readme)
    assert found, "README: no pruning line"
    summary = list(csv.DictReader((REPO / "experiments/search_pruning/summary.csv").open()))

    def column(pruner: str, name: str) -> list[float]:
        return [float(row[name]) for row in summary if row["pruner"] == pruner]

    def mean_std(values: list[float]) -> str:
        mean = sum(values) / len(values)
        std = (sum((value - mean) ** 2 for value in values) / (len(values) - 1)) ** 0.5
        return f"{mean:.2f} ± {std:.2f}"

    wall = {pruner: column(pruner, "wall_s") for pruner in ("none", "median")}
    assert found[1] == f"{sum(wall['median']) / sum(wall['none']):.2f}", "README: pruning wall time ratio"
    assert found[2] == mean_std(column("median", "best_val_nll")), "README: best val/best_nll with pruning"
    assert found[3] == mean_std(column("none", "best_val_nll")), "README: best val/best_nll without pruning"
    patient = re.search(r"`median_patient`\) takes (\S+) of the wall time and its best is (\S+ ± [0-9.]+)", readme)
    assert patient, "README: no median_patient numbers"
    patient_wall = sum(column("median_patient", "wall_s")) / sum(wall["none"])
    assert patient[1] == f"{patient_wall:.2f}", "README: median_patient wall time ratio"
    assert patient[2] == mean_std(column("median_patient", "best_val_nll")), "README: median_patient best"
    cpu = re.search(r"at (\S+) of the CPU time", readme)
    patient_cpu = sum(column("median_patient", "cpu_s")) / sum(column("none", "cpu_s"))
    assert cpu and cpu[1] == f"{patient_cpu:.2f}", "README: median_patient CPU time ratio"


def test_readme_links_into_the_docs_resolve():
    links = re.findall(r"\]\((docs/[^)#]+)", (REPO / "README.md").read_text())
    assert links, "README.md links to no docs page"
    assert [link for link in links if not (REPO / link).is_file()] == []


# The machinery itself


def test_blocks_are_found_with_their_skip_marks(tmp_path, monkeypatch):
    import docs_blocks

    (tmp_path / "page.md").write_text(
        "text\n```bash\necho one\n```\n<!-- docs-test: skip: needs a GPU -->\n```bash\nnvidia-smi\n```\n"
        '```python exec="on"\nprint(1)\n```\n- item\n\n    ```python\n    x = 1\n    ```\n```text\nout\n```\n'
        "```python\nfor n in (1, 2):\n    print(n)\n```\n"
    )
    monkeypatch.setattr(docs_blocks, "REPO", tmp_path)
    blocks = docs_blocks.runnable_blocks("page.md")
    assert [(b.line, b.lang, b.code, b.skip_reason) for b in blocks] == [
        (2, "bash", "echo one\n", None),
        (6, "bash", "nvidia-smi\n", "needs a GPU"),
        (14, "python", "x = 1\n", None),
        (20, "python", "for n in (1, 2):\n    print(n)\n", None),  # its own indentation kept
    ]


def test_made_train_gets_tiny_settings_that_win_over_the_command():
    args = tiny_train_args(["experiment=paper_dna", "trainer.max_epochs=400", "hydra.run.dir=runs/dna"])
    assert args[:2] == ["experiment=paper_dna", "hydra.run.dir=runs/dna"]
    assert {"trainer.max_epochs=2", "model.hidden_sizes=[16]", "logger=csv", "ensemble.num_masks=8"} <= set(args)
    assert tiny_train_args(["--cfg", "job", "data=dna"]) == ["--cfg", "job", "data=dna"]


def test_a_sweep_is_cut_to_a_few_jobs_named_as_without_the_tiny_settings():
    args = tiny_train_args(
        ["-m", "data=dna", "model.num_masks=1,2,4,8", "seed=0,1,2", "model.hidden_sizes=[500],[9,9]"]
    )
    assert "model.num_masks=1,2" in args and "seed=0,1" in args and "model.hidden_sizes=[16],[16,16]" in args
    assert "hydra.job.config.override_dirname.exclude_keys=[experiment,trainer,logger,trainer.max_epochs]" in args
