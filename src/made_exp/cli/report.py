"""``made-report``: our test NLLs next to the paper's, from the ``results.json`` of made-train runs.

Usage:
    made-report logs/train/multiruns/<date> [more run or multirun dirs] [--out DIR]

Runs are grouped by dataset and configuration (every config key except seeds and paths), so
the seeds of one configuration make one row: mean ± sample std of ``test/nll`` over its runs; ``seeds``
counts distinct seed values (``seed`` and the ``seeds`` streams), and says how many runs there were when a
seed ran more than once. A run that training ended before early stopping fired (``trainer.max_epochs``,
``trainer.max_time``, something else, or no early stopping at all) is shorter than the paper's protocol and
its row says so (``short_of_protocol``). Writes
``report.md``, ``report.csv`` and, where their data exist, ``nll_vs_masks.png``,
``samples_binarized_mnist.png`` and ``per_mask_nll.png`` into ``--out`` (default: the first
dir). Per-mask NLLs are read from a top-level ``per_mask_nll`` list (nats, one per mask) in
``results.json`` or ``eval_*.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from made_exp.errors import exit_on_user_error
from made_exp.runs.atomic import csv_text, replace_atomically, write_text_atomic
from made_exp.runs.figures import legend_below, save_figure, subplots
from made_exp.runs.paper import MASK_SAMPLING, ONE_MASK, SOURCES, mnist_column, paper_value
from made_exp.runs.records import ReportError, dataset_name, read_record, results_files
from made_exp.runs.rundir import RunDir

__all__ = [
    "Run",
    "Group",
    "ReportError",
    "load_runs",
    "group_runs",
    "summarise",
    "markdown_table",
    "report",
    "main",
]

# Keys that differ between runs of one configuration without changing what is measured.
IGNORED_TOP_LEVEL = {"paths", "logger", "hydra", "tags", "task_name", "seeds", "resume", "overwrite"}
IGNORED_LEAVES = {"seed", "dirpath", "default_root_dir", "save_dir", "data_dir", "download"}
# Keys the masks group sets together; the configuration label already names them.
MASK_KEYS = {
    "masks.schedule",
    "masks.val_num_masks",
    "model.num_masks",
    "ensemble.num_masks",
    "ensemble.mask_source",
    "model.hidden_sizes",
}
CSV_FIELDS = [
    "dataset",
    "configuration",
    "paper_column",
    "n_seeds",
    "n_runs",
    "seeds",
    "test_nll_mean",
    "test_nll_std",
    "paper_nll",
    "diff",
    "diff_pct",
    "wall_time_s_mean",
    "short_of_protocol",
    "paper_source",
    "run_dirs",
]
PROTOCOL_END = "early_stopping"  # the paper trains until early stopping (look-ahead) fires


@dataclass(frozen=True)
class Run:
    """One made-train run: its dataset, its config without seeds and paths, and what it measured."""

    run_dir: Path
    dataset: str
    config: tuple[tuple[str, object], ...]
    seed: int | None
    test_nll: float
    wall_time_s: float | None
    per_mask_nll: tuple[float, ...]
    seed_streams: tuple[tuple[str, object], ...] = ()
    stopped_by: str = PROTOCOL_END

    def get(self, key: str, default=None):
        return dict(self.config).get(key, default)

    @property
    def num_masks(self) -> int:
        """Masks in the test mixture: the fresh-mask count, or else the bank size K."""
        return int(self.get("ensemble.num_masks") or self.get("model.num_masks", 1))

    @property
    def seed_value(self) -> tuple:
        """What makes two runs different seeds: ``seed`` and the streams set apart from it (``seeds.*``)."""
        return (self.seed, self.seed_streams)

    @property
    def seed_label(self) -> str:
        """``seed``, with any stream that differs from it: ``0 (init=5)``."""
        streams = {name: value for name, value in self.seed_streams if value != self.seed}
        return str(self.seed) + (f" ({', '.join(f'{k}={v}' for k, v in streams.items())})" if streams else "")

    @property
    def mask_sampling(self) -> bool:
        return self.get("masks.schedule") == "fresh"

    @property
    def hidden_sizes(self) -> list[int]:
        return list(self.get("model.hidden_sizes", ()))

    def masks_label(self) -> str:
        if self.mask_sampling:
            return f"mask sampling ({self.num_masks} test masks)"
        bank = int(self.get("model.num_masks", 1))
        return ONE_MASK if bank == 1 else f"{bank} masks"

    def paper_column(self) -> str | None:
        """The paper's column this run compares with: Table 4's two columns, Table 6's rows."""
        if self.dataset == "binarized_mnist":
            return None if self.mask_sampling else mnist_column(len(self.hidden_sizes), self.num_masks)
        return MASK_SAMPLING if self.mask_sampling or self.num_masks > 1 else ONE_MASK


@dataclass
class Group:
    """The runs of one dataset and configuration, differing only in seed."""

    dataset: str
    label: str
    runs: list[Run]


def _flatten(node, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        flat = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    if isinstance(node, list):
        node = tuple(node) if all(isinstance(v, (int, float, str, bool)) for v in node) else json.dumps(node)
    return {prefix[:-1]: node}


def _configuration(config: dict) -> tuple[tuple[str, object], ...]:
    kept = {key: value for key, value in config.items() if key not in IGNORED_TOP_LEVEL}
    flat = _flatten(kept)
    return tuple(sorted((k, v) for k, v in flat.items() if k.rsplit(".", 1)[-1] not in IGNORED_LEAVES))


def _per_mask_nll(run_dir: Path, results: dict) -> tuple[float, ...]:
    for payload in [results, *(read_record(p) for p in RunDir(run_dir).evaluations())]:
        if payload.get("per_mask_nll"):
            return tuple(float(v) for v in payload["per_mask_nll"])
    return ()


def load_run(path: Path) -> Run | None:
    """The run whose ``results.json`` is ``path``; None if it has no ``test/nll`` to report."""
    results = read_record(path)
    if not isinstance(results.get("config"), dict) or not isinstance(results.get("metrics"), dict):
        raise ReportError(f"{path} has no 'config' and 'metrics': not a made-train results.json")
    config, metrics = results["config"], results["metrics"]
    if "test/nll" not in metrics:
        return None
    return Run(
        run_dir=path.parent,
        dataset=dataset_name(config.get("data", {})),
        config=_configuration(config),
        seed=config.get("seed"),
        test_nll=float(metrics["test/nll"]),
        wall_time_s=results.get("wall_time_s"),
        per_mask_nll=_per_mask_nll(path.parent, results),
        seed_streams=tuple(sorted((config.get("seeds") or {}).items())),
        stopped_by=stopped_by(results),
    )


def stopped_by(results: dict) -> str:
    """What ended training: ``results["stopped_by"]`` where made-train recorded it, else inferred from the
    config and ``epochs``: no early-stopping callback; ``max_epochs`` if the epochs reached the cap (early
    stopping in the last epoch looks the same, and counts as the cap); ``max_time`` if a time cap was set
    (it may not have been reached: the label errs towards warning); otherwise early stopping."""
    if results.get("stopped_by"):
        return str(results["stopped_by"])
    config, epochs = results.get("config", {}), results.get("epochs")
    trainer = config.get("trainer") or {}
    if isinstance(config.get("callbacks"), dict) and "early_stopping" not in config["callbacks"]:
        return "no_early_stopping"
    if epochs is not None and trainer.get("max_epochs") is not None and epochs >= trainer["max_epochs"]:
        return "max_epochs"
    if trainer.get("max_time"):
        return "max_time"
    return PROTOCOL_END


def load_runs(dirs: list[Path]) -> tuple[list[Run], list[Path], list[str]]:
    """Every run under ``dirs`` with a ``test/nll``, the results files that have none, and a line naming each
    unreadable one (skipped, left as it is)."""
    runs, without_nll, unreadable = [], [], []
    for directory in dirs:
        for path in results_files(directory):
            try:
                run = load_run(path)
            except ReportError as error:
                print(f"made-report: skipped {error}", file=sys.stderr)
                unreadable.append(str(error))
                continue
            if run is None:
                without_nll.append(path)
            else:
                runs.append(run)
    return runs, without_nll, unreadable


def unfinished_runs(dirs: list[Path]) -> list[Path]:
    """Hydra job dirs (they hold ``.hydra/``) without a ``results.json``: failed or still running."""
    return sorted(p.parent for d in dirs for p in Path(d).rglob(".hydra") if not RunDir(p.parent).is_finished())


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs grouped by dataset and configuration, labelled by masks, hidden sizes and what else varies."""
    by_config: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        by_config[(run.dataset, run.config)].append(run)
    labels: dict[tuple, str] = {}
    for dataset in {dataset for dataset, _ in by_config}:
        configs = {config: dict(config) for d, config in by_config if d == dataset}
        # A key that newer runs record and older ones lack names no difference if it has one value
        # wherever it is recorded; unless that leaves two configurations with the same label.
        for recorded_only in (True, False):
            varying = varying_keys(list(configs.values()), recorded_only)
            named = {
                config: config_label(by_config[dataset, config][0], values, varying)
                for config, values in configs.items()
            }
            if len(set(named.values())) == len(named):
                break
        labels.update({(dataset, config): label for config, label in named.items()})
    groups = [
        Group(dataset, labels[dataset, config], sorted(members, key=lambda r: (r.seed is None, r.seed, str(r.run_dir))))
        for (dataset, config), members in by_config.items()
    ]
    return sorted(groups, key=lambda g: (g.dataset, g.runs[0].mask_sampling, g.runs[0].num_masks, g.label))


def varying_keys(configs: list[dict], recorded_only: bool) -> set[str]:
    """Config keys (masks aside) with more than one value over ``configs``; a missing key counts as a
    value unless ``recorded_only``."""
    keys = set().union(*configs) - MASK_KEYS
    return {
        key
        for key in keys
        if len({json.dumps(c.get(key), default=str) for c in configs if key in c or not recorded_only}) > 1
    }


def config_label(run: Run, values: dict, varying: set[str]) -> str:
    """Masks, hidden sizes and the ``varying`` keys this configuration sets."""
    extras = [f"{key}={values[key]}" for key in sorted(varying) if values.get(key) is not None]
    return ", ".join([run.masks_label(), f"hidden {run.hidden_sizes}", *extras])


def short_of_protocol(group: Group) -> str:
    """Why runs of ``group`` trained less than the paper's protocol (until early stopping fired), e.g.
    ``trainer.max_epochs=20 (3 of 3 runs)``; empty when every run early-stopped."""
    config = dict(group.runs[0].config)
    counts: dict[str, int] = defaultdict(int)
    for run in group.runs:
        if run.stopped_by != PROTOCOL_END:
            counts[run.stopped_by] += 1
    reasons = []
    for reason, count in sorted(counts.items()):
        cap = f"trainer.{reason}"
        label = f"{cap}={config.get(cap)}" if cap in config else reason.replace("_", " ")
        reasons.append(f"{label} ({count} of {len(group.runs)} runs)")
    return "; ".join(reasons)


def summarise(group: Group) -> dict:
    """One report row: our mean ± sample std over runs, the number of distinct seeds, the paper's value and the
    difference, and whether the runs were shorter than the paper's protocol."""
    nlls = [run.test_nll for run in group.runs]
    mean = statistics.fmean(nlls)
    column = group.runs[0].paper_column()
    paper = paper_value(group.dataset, column) if column else None
    walls = [run.wall_time_s for run in group.runs if run.wall_time_s is not None]
    return {
        "dataset": group.dataset,
        "configuration": group.label,
        "paper_column": column or "",
        "n_seeds": len({run.seed_value for run in group.runs}),
        "n_runs": len(group.runs),
        "seeds": " ".join(run.seed_label for run in group.runs),
        "test_nll_mean": mean,
        "test_nll_std": statistics.stdev(nlls) if len(nlls) > 1 else None,
        "paper_nll": paper,
        "diff": None if paper is None else mean - paper,
        "diff_pct": None if paper is None else 100 * (mean - paper) / paper,
        "wall_time_s_mean": statistics.fmean(walls) if walls else None,
        "short_of_protocol": short_of_protocol(group),
        "paper_source": SOURCES.get(group.dataset, "") if paper is not None else "",
        "run_dirs": " ".join(str(run.run_dir) for run in group.runs),
    }


def _number(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def markdown_table(rows: list[dict]) -> str:
    header = (
        "| dataset | configuration | paper column | seeds | test NLL (ours) | paper | ours − paper | "
        "ours − paper (%) | wall time (s) |"
    )
    lines = [header, "|" + "---|" * 3 + "---:|" * 6]
    for row in rows:
        ours = _number(row["test_nll_mean"])
        if row["test_nll_std"] is not None:
            ours += f" ± {_number(row['test_nll_std'])}"
        if row["short_of_protocol"]:
            ours += f" (short: {row['short_of_protocol']})"
        seeds = str(row["n_seeds"]) + (f" ({row['n_runs']} runs)" if row["n_runs"] != row["n_seeds"] else "")
        lines.append(
            f"| {row['dataset']} | {row['configuration']} | {row['paper_column'] or '—'} | {seeds} | "
            f"{ours} | {_number(row['paper_nll'])} | {_number(row['diff'], signed=True)} | "
            f"{_number(row['diff_pct'], 1, signed=True)} | {_number(row['wall_time_s_mean'], 0)} |"
        )
    return "\n".join(lines)


def plot_nll_vs_masks(groups: list[Group], path: Path) -> bool:
    """Test NLL (mean ± std over seeds) against the number of test masks, where a sweep varies it."""
    lines: dict[str, dict[tuple, dict[int, list[float]]]] = defaultdict(lambda: defaultdict(dict))
    for group in groups:
        first = group.runs[0]
        rest = tuple((k, v) for k, v in first.config if k not in MASK_KEYS - {"model.hidden_sizes"})
        line = ("mask sampling" if first.mask_sampling else "fixed bank", rest)
        lines[group.dataset][line][first.num_masks] = [run.test_nll for run in group.runs]
    swept = {
        dataset: {line: points for line, points in by_line.items() if len(points) > 1}
        for dataset, by_line in lines.items()
    }
    swept = {dataset: by_line for dataset, by_line in swept.items() if by_line}
    if not swept:
        return False
    figure, axes = subplots(len(swept))
    for ax, (dataset, by_line) in zip(axes, sorted(swept.items()), strict=True):
        labels = [f"{kind}, hidden {list(dict(rest).get('model.hidden_sizes', ()))}" for kind, rest in by_line]
        for label, points in zip(labels, by_line.values(), strict=True):
            xs = sorted(points)
            means = [statistics.fmean(points[x]) for x in xs]
            stds = [statistics.stdev(points[x]) if len(points[x]) > 1 else 0.0 for x in xs]
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
        ax.set_xscale("log", base=2)
        ticks = sorted({x for points in by_line.values() for x in points})
        ax.set_xticks(ticks, [str(x) for x in ticks])  # the numbers of masks that ran, as integers
        ax.minorticks_off()
        ax.ticklabel_format(axis="y", useOffset=False)  # NLLs as they are, not as offsets from one of them
        ax.set(title=dataset, xlabel="masks in the test mixture", ylabel="test NLL (nats)")
        if len(set(labels)) == len(labels):  # lines that differ in more than the label says get none
            legend_below(ax)
    save_figure(figure, path)
    return True


def plot_per_mask_histogram(groups: list[Group], path: Path) -> bool:
    """Histogram of each mask's own test NLL, per dataset, where runs recorded ``per_mask_nll``."""
    values: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for group in groups:
        per_mask = [v for run in group.runs for v in run.per_mask_nll]
        if per_mask:
            values[group.dataset][group.label] = per_mask
    if not values:
        return False
    figure, axes = subplots(len(values))
    for ax, (dataset, by_label) in zip(axes, sorted(values.items()), strict=True):
        for label, nlls in sorted(by_label.items()):
            ax.hist(nlls, bins=30, alpha=0.6, label=label)
        ax.ticklabel_format(axis="x", useOffset=False)
        ax.set(title=dataset, xlabel="test NLL of one mask (nats)", ylabel="masks")
        legend_below(ax, fontsize="small")
    save_figure(figure, path)
    return True


def copy_mnist_samples(groups: list[Group], path: Path) -> Path | None:
    """Copy ``samples.png`` of the best binarized-MNIST run that has one; returns its run dir."""
    candidates = [
        run
        for group in groups
        if group.dataset == "binarized_mnist"
        for run in group.runs
        if RunDir(run.run_dir).samples.is_file()
    ]
    if not candidates:
        return None
    best = min(candidates, key=lambda run: run.test_nll)
    replace_atomically(path, lambda temporary: shutil.copyfile(RunDir(best.run_dir).samples, temporary))
    return best.run_dir


def report(dirs: list[Path], out: Path) -> str:
    """Write report.md, report.csv and the figures into ``out``; returns the Markdown table."""
    runs, without_nll, unreadable = load_runs(dirs)
    if not runs:
        raise ReportError(f"no results.json with a test/nll under {', '.join(map(str, dirs))}")
    groups = group_runs(runs)
    rows = [summarise(group) for group in groups]
    table = markdown_table(rows)
    out.mkdir(parents=True, exist_ok=True)

    figures = []
    if plot_nll_vs_masks(groups, out / "nll_vs_masks.png"):
        figures.append("![test NLL against the number of masks](nll_vs_masks.png)")
    else:
        figures.append("NLL against the number of masks: skipped, no sweep varies the number of masks.")
    sample_run = copy_mnist_samples(groups, out / "samples_binarized_mnist.png")
    if sample_run is not None:
        figures.append(f"![binarized MNIST samples from {sample_run}](samples_binarized_mnist.png)")
    else:
        figures.append("binarized MNIST samples: skipped, no binarized_mnist run dir has samples.png.")
    if plot_per_mask_histogram(groups, out / "per_mask_nll.png"):
        figures.append("![test NLL of each mask on its own](per_mask_nll.png)")
    else:
        figures.append("per-mask NLL histogram: skipped, no results.json or eval_*.json has a per_mask_nll list.")

    notes = [f"{path}: no test/nll (an unnormalised ensemble?), left out" for path in without_nll]
    notes += [f"skipped {line}" for line in unreadable]
    for group in groups:
        seeds = [run.seed_value for run in group.runs]
        repeated = sorted({run.seed_label for run in group.runs if seeds.count(run.seed_value) > 1})
        if repeated:
            notes.append(
                f"{group.dataset}, {group.label}: seed {', '.join(repeated)} ran more than once; "
                "every run is averaged, and the seeds column counts distinct seeds"
            )
    if any(row["short_of_protocol"] for row in rows):
        notes.append(
            "short: training ended by trainer.max_epochs, trainer.max_time or something else (or had no "
            "early stopping) before early stopping fired, so shorter than the paper's protocol; results "
            "without a recorded stopped_by count as short when their epochs reached max_epochs or a "
            "max_time was set"
        )
    notes += [f"{path}: no results.json (failed or unfinished), left out" for path in unfinished_runs(dirs)]
    markdown = (
        "\n\n".join(
            [
                "# MADE: our test NLL against the paper",
                f"Runs: {len(runs)} from {', '.join(map(str, dirs))}. Test NLL in nats per example (lower is better), "
                "mean ± sample standard deviation over seeds. Paper: Germain et al. 2015, Table 4 (UCI) and Table 6 "
                '(binarized MNIST); the UCI "mask sampling" column also stands for runs with a bank of several masks. '
                '"—": the paper reports no figure for that configuration.',
                table,
                "## Figures",
                "\n\n".join(figures),
                *(["## Notes", "\n".join(f"- {note}" for note in notes)] if notes else []),
            ]
        )
        + "\n"
    )
    write_text_atomic(out / "report.md", markdown)
    write_text_atomic(out / "report.csv", csv_text(rows, CSV_FIELDS))
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="made-report", description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="made-train run or multirun dirs (searched recursively)")
    parser.add_argument("--out", type=Path, help="where to write report.md, report.csv, figures (default: first dir)")
    args = parser.parse_args(argv)
    out = args.out or args.dirs[0]
    with exit_on_user_error("made-report"):
        table = report(args.dirs, out)
    print(table)
    print(f"\nwrote {out / 'report.md'} and {out / 'report.csv'}")


if __name__ == "__main__":
    main()
