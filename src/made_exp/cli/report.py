"""``made-report``: our test NLLs next to the paper's, from the ``results.json`` of made-train runs.

Usage:
    made-report logs/train/multiruns/<date> [more run or multirun dirs] [--out DIR]

Runs are read with ``made_exp.runs.load_runs`` and grouped by dataset and configuration (every config key except
paths and every seed key: ``seed``, ``seeds.*``, ``model.seed``, ``module.evaluation_seed``, ...), so the seeds
of one configuration make one row: mean ± sample std of ``test/nll`` over its runs; ``seeds``
counts distinct seed values (``seed`` and the ``seeds`` streams), and says how many runs there were when a
seed ran more than once. A run that training ended before early stopping fired (``trainer.max_epochs``,
``trainer.max_time``, something else, or no early stopping at all) is shorter than the paper's protocol and
its row says so (``short_of_protocol``). Writes
``report.md``, ``report.csv`` and, where their data exist, ``nll_vs_masks.png``,
``samples_binarized_mnist.png`` and ``per_mask_nll.png`` into ``--out`` (default: the first
dir). A run without ``results.json`` (failed, unfinished) or with one that cannot be read is named in the notes
and left out. Per-mask NLLs are read from a top-level ``per_mask_nll`` list (nats, one per mask) in
``results.json`` or ``eval_*.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas

from made_exp.errors import exit_on_user_error
from made_exp.runs.atomic import csv_text, replace_atomically, write_text_atomic
from made_exp.runs.dataframe import PROTOCOL_END, config_columns, load_runs
from made_exp.runs.figures import legend_below, save_figure, subplots
from made_exp.runs.paper import MASK_SAMPLING, ONE_MASK, SOURCES, mnist_column, paper_value
from made_exp.runs.records import ReportError, dataset_name, results_files
from made_exp.runs.rundir import RunDir

__all__ = [
    "Run",
    "Group",
    "ReportError",
    "is_seed_key",
    "load_report_runs",
    "group_runs",
    "summarise",
    "markdown_table",
    "report",
    "main",
]

# Keys that differ between runs of one configuration without changing what is measured (and every seed key,
# ``is_seed_key``).
IGNORED_TOP_LEVEL = {"paths", "logger", "hydra", "tags", "task_name", "resume", "overwrite"}
IGNORED_LEAVES = {"dirpath", "default_root_dir", "save_dir", "data_dir", "download"}
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


def is_seed_key(key: str) -> bool:
    """A key that seeds a random stream (``seed``, ``seeds.init``, ``model.seed``, ``module.evaluation_seed``):
    runs that differ only in these are seeds of one configuration."""
    return any(part in ("seed", "seeds") or part.endswith("_seed") for part in key.split("."))


def _missing(value: object) -> bool:
    """A key the run does not set: None, or a gap in ``load_runs``' frame where other runs set it."""
    return not isinstance(value, (tuple, list)) and bool(pandas.isna(value))


def _configuration(row: dict, columns: list[str]) -> tuple[tuple[str, object], ...]:
    """What is measured: the config keys the run sets, seeds, paths and bookkeeping left out."""
    return tuple(
        sorted(
            (key, row[key])
            for key in columns
            if not _missing(row[key])
            and key.split(".", 1)[0] not in IGNORED_TOP_LEVEL
            and key.rsplit(".", 1)[-1] not in IGNORED_LEAVES
            and not is_seed_key(key)
        )
    )


def _per_mask_nll(row: dict) -> tuple[float, ...]:
    """The run's own ``per_mask_nll``, else the first evaluation's that has one."""
    for key in ["per_mask_nll", *(key for key in row if key.startswith("eval/") and key.endswith("/per_mask_nll"))]:
        if isinstance(row.get(key), tuple) and row[key]:
            return tuple(float(value) for value in row[key])
    return ()


def run_from_row(row: dict, columns: list[str]) -> Run:
    """The finished run of ``load_runs``' ``row`` (``columns``: its config columns)."""
    config = {key: row[key] for key in columns if not _missing(row[key])}
    data = {key.removeprefix("data."): value for key, value in config.items() if key.startswith("data.")}
    return Run(
        run_dir=Path(row["run_dir"]),
        dataset=dataset_name(data),
        config=_configuration(row, columns),
        seed=config.get("seed"),
        test_nll=float(row["test/nll"]),
        wall_time_s=None if _missing(row.get("wall_time_s")) else float(row["wall_time_s"]),
        per_mask_nll=_per_mask_nll(row),
        seed_streams=tuple(sorted((k.removeprefix("seeds."), v) for k, v in config.items() if k.startswith("seeds."))),
        stopped_by=str(row["stopped_by"]),
    )


@dataclass
class Loaded:
    """What made-report found under its dirs: the runs with a ``test/nll``, and notes on those left out."""

    runs: list[Run]
    without_nll: list[Path]
    left_out: list[str]


def load_report_runs(dirs: list[Path]) -> Loaded:
    """Every finished run under ``dirs`` with a ``test/nll`` (``made_exp.runs.load_runs``), the results files
    without one, and a note for each run left out: unfinished, failed, or with an unreadable results.json (also
    said on stderr). ReportError for a dir without any results.json."""
    loaded = Loaded([], [], [])
    for directory in dirs:
        results_files(directory)  # ReportError naming a dir that holds no results.json at all
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a corrupt results.json is noted below instead
            frame = load_runs(directory)
        columns = config_columns(frame)
        for row in frame.to_dict("records"):
            if row["status"] == "corrupt":
                print(f"made-report: {row['error']}, left out", file=sys.stderr)
                loaded.left_out.append(f"{row['error']}, left out")
            elif row["status"] != "finished":
                loaded.left_out.append(f"{row['run_dir']}: no results.json ({row['status']}), left out")
            elif _missing(row.get("test/nll")):
                loaded.without_nll.append(RunDir(row["run_dir"]).results)
            else:
                loaded.runs.append(run_from_row(row, columns))
    return loaded


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
        labels = line_labels(list(by_line))
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
        legend_below(ax)
    save_figure(figure, path)
    return True


def line_labels(lines: list[tuple[str, tuple[tuple[str, object], ...]]]) -> list[str]:
    """A label for each ``(kind of masks, config)`` line of one dataset: the kind, the hidden sizes, and every key
    whose value differs between the lines, so that no two lines share a label."""
    configs = [dict(config) for _, config in lines]
    varying = sorted(varying_keys(configs, recorded_only=False))
    return [
        ", ".join(
            [kind, f"hidden {list(config.get('model.hidden_sizes', ()))}"]
            + [f"{key}={config.get(key)}" for key in varying]
        )
        for (kind, _), config in zip(lines, configs, strict=True)
    ]


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
    loaded = load_report_runs(dirs)
    runs, without_nll = loaded.runs, loaded.without_nll
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
    notes += loaded.left_out
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
