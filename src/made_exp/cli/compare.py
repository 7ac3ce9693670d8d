"""``made-compare``: score every run of a sweep under each ensemble strategy; table, CSV and plot.

Usage:
    made-compare logs/mixture_vs_poe [--out DIR] [--set poe.log_z_method=ais]

Every made-train run under the directory (a dir with ``results.json``) is evaluated with
``made_exp.lightning.evaluation.evaluate`` under each of ``STRATEGIES`` (conf/ensemble/ names); the results go
to ``eval_<strategy>.json`` in the run dir, and a run that already has that file, made of the weights its best
checkpoint holds now (``weights_sha256``), is not evaluated again; one whose checkpoint changed since (a run
trained on) or whose file predates that record is. ``--set STRATEGY.KEY=VALUE`` overrides a strategy's config
(conf/ensemble/STRATEGY.yaml); that strategy's results then go to ``eval_<strategy>.<hash of its
settings>.json`` (``RunDir.evaluation``), so the same runs can be scored under both settings (log Z by importance
sampling and by AIS) and neither file is read for the other. Writes ``report.md`` (test NLL by dataset, K and
strategy, means over seeds), ``results.csv`` (one row per run and strategy) and ``nll_vs_k.png`` into ``--out``
(default: the directory).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from made_exp.cli.evaluate import ACCELERATORS
from made_exp.errors import UserError
from made_exp.runs.atomic import csv_text, write_json_atomic, write_text_atomic
from made_exp.runs.config import compose_ensemble, exit_on_config_error
from made_exp.runs.figures import legend_below, save_figure, subplots
from made_exp.runs.records import RecordError, ReportError, dataset_name, read_record, results_files
from made_exp.runs.rundir import RunDir

__all__ = [
    "STRATEGIES",
    "CompareError",
    "find_runs",
    "evaluate_runs",
    "collect",
    "summarise",
    "markdown_table",
    "plot_nll_vs_k",
    "compare",
    "main",
]

# conf/ensemble/ name -> label. Logit averaging is not a normalised distribution: its number is a
# score, not a test NLL, and must never be read as one.
STRATEGIES = {
    "mixture": "mixture",
    "learned_mixture": "learned mixture",
    "poe": "product of experts",
    "logit_average": "logit average (unnormalised)",
    "best_single": "best single mask",
}
CSV_FIELDS = [
    "dataset",
    "training",
    "num_masks",
    "seed",
    "strategy",
    "test_nll",
    "unnormalised_nll",
    "log_z",
    "log_z_stderr",
    "effective_sample_size",
    "effective_num_masks",
    "single_mask_nll_mean",
    "log_total_mass",
    "eval_wall_time_s",
    "run_dir",
]
# results.csv field <- eval_<strategy>.json metric
METRICS = {
    "test_nll": "test/nll",
    "unnormalised_nll": "test/unnormalised_nll",
    "log_z": "test/ensemble/log_z",
    "log_z_stderr": "test/ensemble/log_z_stderr",
    "effective_sample_size": "test/ensemble/effective_sample_size",  # of the AIS chains (poe.log_z_method=ais)
    "effective_num_masks": "test/ensemble/effective_num_masks",
    "single_mask_nll_mean": "test/single_mask_nll_mean",
    "log_total_mass": "test/ensemble/log_total_mass",
}


class CompareError(UserError):
    """An unknown strategy in ``--set`` (no runs at all is made_exp.runs.records.ReportError)."""


def find_runs(root: Path) -> list[Path]:
    """The made-train run dirs (they hold ``results.json``) under ``root``, sorted."""
    return [path.parent for path in results_files(root)]


def readable_runs(runs: list[Path]) -> tuple[list[Path], list[str]]:
    """The runs whose ``results.json`` reads, and a line naming each one that does not (left as it is, skipped)."""
    readable, skipped = [], []
    for run_dir in runs:
        try:
            read_record(RunDir(run_dir).results)
        except RecordError as error:
            print(f"made-compare: skipped {error}", file=sys.stderr)
            skipped.append(str(error))
        else:
            readable.append(run_dir)
    return readable, skipped


def parse_overrides(items: list[str]) -> dict[str, list[str]]:
    """``["poe.num_importance_samples=2000"]`` -> ``{"poe": ["num_importance_samples=2000"]}``."""
    overrides: dict[str, list[str]] = defaultdict(list)
    for item in items:
        strategy, _, setting = item.partition(".")
        if strategy not in STRATEGIES or "=" not in setting:
            choices = ", ".join(STRATEGIES)
            raise CompareError(f"--set {item!r}: expected STRATEGY.KEY=VALUE with STRATEGY one of {choices}")
        overrides[strategy].append(setting)
    return overrides


def evaluate_runs(runs: list[Path], overrides: dict[str, list[str]], accelerator: str = "auto") -> None:
    """Write each strategy's evaluation under its ``overrides`` into each run dir that lacks it, scored on
    ``accelerator`` (made_exp.lightning.evaluation.evaluate)."""
    from made_exp.lightning.evaluation import evaluate  # Lightning and torch: only when there is something to evaluate
    from made_exp.lightning.loading import checkpoint_digest, find_checkpoint

    for run_dir in runs:
        weights = checkpoint_digest(find_checkpoint(run_dir))
        for strategy in STRATEGIES:
            path = RunDir(run_dir).evaluation(strategy, overrides.get(strategy, []))
            scored = _scored_weights(path)
            if scored == weights:
                continue
            why = f" ({path.name} scored other weights, does not say which, or is unreadable)" if path.is_file() else ""
            print(f"made-compare: evaluating {run_dir.name} under {strategy}{why}", file=sys.stderr)
            write_json_atomic(path, evaluate(run_dir, strategy, overrides.get(strategy, []), accelerator=accelerator))


def _scored_weights(evaluation: Path) -> str | None:
    """The ``weights_sha256`` an evaluation file records; None when there is none or it is unreadable (re-scored)."""
    try:
        return read_record(evaluation).get("weights_sha256")
    except RecordError:
        return None


def training_label(config: dict) -> str:
    """How a run's masks were trained: the schedule and the objective (``conf/masks/``)."""
    masks = config.get("masks", {})
    schedule, objective = masks.get("schedule", "cycle"), masks.get("objective", "nll")
    estimator = masks.get("log_z", "exact")
    labels = {
        "poe": "PoE objective" + (f", {estimator}" if estimator in ("smc", "nce") else ""),
        "learned_mixture": "learned-mixture objective",
        "mixture": f"mixture objective (S = {masks.get('samples_per_step')})",
    }
    warm = ", warm start" if config.get("init_from") else ""
    if objective in labels:
        return labels[objective] + warm
    return ("bank, Jensen" if schedule == "cycle" else "fresh masks, Jensen") + warm


def collect(runs: list[Path], overrides: dict[str, list[str]]) -> list[dict]:
    """One row (``CSV_FIELDS``) per run and strategy, read from the runs' evaluations under ``overrides``."""
    rows = []
    for run_dir in runs:
        config = read_record(RunDir(run_dir).results)["config"]
        for strategy in STRATEGIES:
            evaluation = read_record(RunDir(run_dir).evaluation(strategy, overrides.get(strategy, [])))
            metrics = evaluation["metrics"]
            rows.append(
                {
                    "dataset": dataset_name(config.get("data", {})),
                    "training": training_label(config),
                    "num_masks": int(config["model"]["num_masks"]),
                    "seed": config.get("seed"),
                    "strategy": strategy,
                    **{field: metrics.get(key) for field, key in METRICS.items()},
                    "eval_wall_time_s": evaluation.get("wall_time_s"),
                    "run_dir": str(run_dir),
                }
            )
    return rows


def summarise(rows: list[dict]) -> dict[tuple[str, str, int], dict[str, list[float]]]:
    """(dataset, training, K) -> ``"<strategy>/<field>"`` -> the values over seeds."""
    table: dict[tuple[str, str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        cell = table[row["dataset"], row["training"], row["num_masks"]]
        for field in METRICS:
            if row[field] is not None:
                cell[f"{row['strategy']}/{field}"].append(row[field])
    return dict(sorted(table.items()))


def _mean(values: list[float] | None, digits: int = 2, spread: bool = True) -> str:
    """``mean ± sample std`` over seeds (just the mean for one seed); "—" when there is nothing."""
    if not values:
        return "—"
    text = f"{statistics.fmean(values):.{digits}f}"
    return text + (f" ± {statistics.stdev(values):.{digits}f}" if spread and len(values) > 1 else "")


def markdown_table(summary: dict[tuple[str, str, int], dict[str, list[float]]]) -> str:
    """Test NLL in nats per (dataset, training, K) and strategy; logit averaging in its own, unnormalised, column."""
    header = (
        "| dataset | training | K | seeds | mean single mask | mixture | learned mixture | eff. masks "
        "| best single mask | product of experts | PoE unnormalised | PoE log Z ± stderr "
        "| logit average (unnormalised) |"
    )
    lines = [header, "|---|---|" + "---:|" * 11]
    for (dataset, training, num_masks), cell in summary.items():
        log_z, stderr = cell.get("poe/log_z"), cell.get("poe/log_z_stderr")
        log_z_text = "—" if not log_z else f"{statistics.fmean(log_z):.3f} ± {statistics.fmean(stderr):.3f}"
        lines.append(
            "| "
            + " | ".join(
                [
                    dataset,
                    training,
                    str(num_masks),
                    str(len(cell.get("mixture/test_nll", []))),
                    _mean(cell.get("mixture/single_mask_nll_mean")),
                    _mean(cell.get("mixture/test_nll")),
                    _mean(cell.get("learned_mixture/test_nll")),
                    _mean(cell.get("learned_mixture/effective_num_masks"), 1, spread=False),
                    _mean(cell.get("best_single/test_nll")),
                    _mean(cell.get("poe/test_nll")),
                    _mean(cell.get("poe/unnormalised_nll")),
                    log_z_text,
                    _mean(cell.get("logit_average/unnormalised_nll")),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


# plotted line -> (summary key, matplotlib style)
PLOTTED = {
    "mean single mask": ("mixture/single_mask_nll_mean", {"color": "grey", "linestyle": "--"}),
    "mixture": ("mixture/test_nll", {}),
    "learned mixture": ("learned_mixture/test_nll", {}),
    "product of experts": ("poe/test_nll", {}),
    "best single mask": ("best_single/test_nll", {}),
    "logit average (unnormalised, not an NLL)": ("logit_average/unnormalised_nll", {"linestyle": ":"}),
}


def plot_nll_vs_k(summary: dict[tuple[str, str, int], dict[str, list[float]]], path: Path) -> None:
    """Test NLL (mean ± std over seeds) against K for each strategy, one panel per dataset and training."""
    panels = sorted({(dataset, training) for dataset, training, _ in summary})
    figure, axes = subplots(len(panels))
    for ax, (dataset, training) in zip(axes, panels, strict=True):
        ks = sorted(k for d, t, k in summary if (d, t) == (dataset, training))
        for label, (key, style) in PLOTTED.items():
            cells = [(k, summary[dataset, training, k].get(key)) for k in ks]
            points = [(k, statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for k, v in cells if v]
            if points:
                xs, means, stds = zip(*points, strict=True)
                ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label, **style)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set(title=f"{dataset}: {training}", xlabel="K (masks in the bank)", ylabel="test NLL (nats)")
        ax.grid(alpha=0.3)
    legend_below(axes[0], fontsize="small")
    figure.tight_layout()
    save_figure(figure, path)


def settings_text(overrides: dict[str, list[str]]) -> str:
    """The ``--set`` settings as the report states them."""
    settings = [f"{strategy}.{setting}" for strategy, items in sorted(overrides.items()) for setting in items]
    return ", ".join(settings) or "each strategy's conf/ensemble/ file"


def compare(root: Path, out: Path, overrides: dict[str, list[str]] | None = None, accelerator: str = "auto") -> str:
    """Evaluate what is missing (on ``accelerator``), then write report.md, results.csv and nll_vs_k.png into
    ``out``; returns the table."""
    (runs, skipped), overrides = readable_runs(find_runs(root)), overrides or {}
    if not runs:
        raise ReportError(f"no readable results.json under {root}")
    for strategy, settings in overrides.items():
        compose_ensemble(strategy, settings)  # a bad --set fails here, before any run is evaluated
    evaluate_runs(runs, overrides, accelerator)
    rows = collect(runs, overrides)
    summary = summarise(rows)
    table = markdown_table(summary)
    out.mkdir(parents=True, exist_ok=True)
    plot_nll_vs_k(summary, out / "nll_vs_k.png")
    markdown = (
        "\n\n".join(
            [
                "# Mixture against product of experts",
                f"{len(runs)} runs under {root}. Test NLL in nats per example (lower is better), mean ± sample std "
                "over seeds. K: masks in the trained bank, all of them combined. Mean single mask: the masks' test "
                "NLLs averaged (Jensen: the mixture is never worse). Learned mixture: weights fitted by EM on the "
                "validation split, eff. masks = exp(entropy of the weights). Product of experts: normalised by log Z "
                "(exact for D <= poe.exact_max_dim, 20 unless set, else importance-sampled, unless poe.log_z_method "
                "says otherwise; mean stderr shown); its "
                "unnormalised NLL drops log Z <= 0 and so bounds the true NLL above. Logit average is NOT a normalised "
                "distribution: its number is a score, not comparable with the test NLLs. "
                f"Settings: {settings_text(overrides)}.",
                *([f"Skipped {len(skipped)} runs:\n" + "\n".join(f"- {line}" for line in skipped)] if skipped else []),
                table,
                "![test NLL against K per strategy](nll_vs_k.png)",
            ]
        )
        + "\n"
    )
    write_text_atomic(out / "report.md", markdown)
    write_text_atomic(out / "results.csv", csv_text(rows, CSV_FIELDS))
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="made-compare", description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="a made-train multirun dir (searched recursively)")
    parser.add_argument("--out", type=Path, help="where to write report.md, results.csv, nll_vs_k.png (default: root)")
    parser.add_argument("--set", nargs="*", default=[], metavar="STRATEGY.KEY=VALUE", help="ensemble config overrides")
    parser.add_argument(
        "--accelerator",
        choices=ACCELERATORS,
        default="auto",
        help="where to score runs not yet scored: auto (a GPU where there is one, default), cpu or gpu",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    with exit_on_config_error("made-compare"):
        table = compare(args.root, args.out or args.root, parse_overrides(args.set), args.accelerator)
    out = args.out or args.root
    print(table)
    print(f"\nwrote {out / 'report.md'}, {out / 'results.csv'} and {out / 'nll_vs_k.png'}")


if __name__ == "__main__":
    main()
