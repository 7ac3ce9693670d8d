"""Issue #28's comparison, from run.py's searches: does median pruning find TPE's best on dna in half the time?

Each pruned condition run.py ran (``median``, and ``median_patient`` if it ran) is set against the unpruned
searches, with its own verdict.

Writes into the out dir ``trials.csv`` (one row per trial), ``summary.csv`` (one row per search), ``report.md``
(tables, the verdict against the target, how it ran) and ``best_vs_time.png``:

    python experiments/search_pruning/report.py /tmp/search_pruning experiments/search_pruning --hardware "..."

``--from-csv`` redraws report.md and the figure from the two CSVs alone (the committed ones, for example):

    python experiments/search_pruning/report.py --from-csv experiments/search_pruning
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
from pathlib import Path

import pandas as pd

from made_exp.errors import UserError, exit_on_user_error
from made_exp.runs.atomic import write_text_atomic
from made_exp.runs.figures import legend_below, save_figure, subplots

PLANNED_SEEDS = 3  # run.py's default --seeds 0 1 2
TARGET_WALL_RATIO = 0.5  # pruned wall time at most half the unpruned one
BASELINE, PRUNED = "none", "median"
PRUNED_CONDITIONS = (PRUNED, "median_patient")  # run.py's CONDITIONS other than none, in report order
COLOURS = {BASELINE: "tab:blue", PRUNED: "tab:orange", "median_patient": "tab:green"}
LINESTYLES = ("-", "--", ":", "-.")  # by sampler seed
FIGURE_CAPTION = "Best `val/best_nll` so far against the seconds since the search's first trial started"
FINISHED_STATES = ("COMPLETE", "PRUNED", "FAIL")
TRIAL_COLUMNS = [
    "search", "pruner", "seed", "trial", "state", "value", "lr", "hidden_sizes", "num_masks", "epochs",
    "start_s", "complete_s",
]  # fmt: skip


def read_timings(runs: Path) -> dict[str, dict]:
    """run.py's ``timings.json``: per finished search, its pruner, seed, wall and CPU seconds."""
    path = runs / "timings.json"
    try:
        timings = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read run.py's timings ({error})") from None
    if not timings:
        raise UserError(f"{path}: no search has finished yet")
    return timings


def trial_rows(runs: Path, search: str, pruner: str, seed: int) -> list[dict]:
    """One row per finished trial of the study ``search`` (its sweep dir's optuna.db); times in seconds since the
    study's first trial started, epochs from the trial's job ``results.json`` (job number = trial number)."""
    import optuna

    storage = runs / search / "optuna.db"
    if not storage.is_file():
        raise UserError(f"{storage}: no such study (is {runs} the out dir of run.py?)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name=search, storage=f"sqlite:///{storage}").trials
    origin = min(trial.datetime_start for trial in trials)
    rows = []
    for trial in trials:
        if trial.state.name not in FINISHED_STATES:
            continue
        rows.append(
            {
                "search": search,
                "pruner": pruner,
                "seed": seed,
                "trial": trial.number,
                "state": trial.state.name,
                "value": trial.value,
                "lr": trial.params.get("optimizer.lr"),
                "hidden_sizes": trial.params.get("model.hidden_sizes"),
                "num_masks": trial.params.get("model.num_masks"),
                "epochs": _epochs(runs / search, trial.number),
                "start_s": (trial.datetime_start - origin).total_seconds(),
                "complete_s": (trial.datetime_complete - origin).total_seconds(),
            }
        )
    return rows


def _epochs(sweep_dir: Path, number: int) -> int | None:
    """Epochs trained by job ``number`` (its results.json), None if it wrote none (a failed trial)."""
    for results in sweep_dir.glob(f"{number}_*/results.json"):
        return json.loads(results.read_text())["epochs"]
    return None


def search_command(sweep_dir: Path) -> str:
    """The made-train command of a search, from the overrides its sweep's multirun.yaml records."""
    from omegaconf import OmegaConf

    path = sweep_dir / "multirun.yaml"
    try:
        overrides = OmegaConf.load(path).hydra.overrides
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read the search's overrides ({error})") from None
    hydra = [override for override in overrides.hydra if override != "hydra.mode=MULTIRUN"]
    return shlex.join(["made-train", "-m", *hydra, *overrides.task])


def search_summary(trials: pd.DataFrame, timing: dict, hardware: str, command: str) -> dict:
    """One search's row of summary.csv from its trials, its timing and its command."""
    complete = trials[trials.state == "COMPLETE"]
    return {
        "search": trials.search.iloc[0],
        "pruner": timing["pruner"],
        "seed": timing["seed"],
        "wall_s": timing["wall_s"],
        "cpu_s": timing["cpu_s"],
        "best_val_nll": complete.value.min(),
        "trials_complete": len(complete),
        "trials_pruned": int((trials.state == "PRUNED").sum()),
        "trials_failed": int((trials.state == "FAIL").sum()),
        "epochs": int(trials.epochs.sum()),
        "hardware": hardware,
        "command": command,
    }


def collect(runs: Path, out: Path, hardware: str) -> None:
    """Read every timed search under ``runs`` into ``out``'s trials.csv and summary.csv."""
    timings = read_timings(runs)
    frames, summaries = [], []
    for search, timing in sorted(timings.items(), key=lambda item: (item[1]["seed"], item[1]["pruner"])):
        trials = pd.DataFrame(trial_rows(runs, search, timing["pruner"], timing["seed"]), columns=TRIAL_COLUMNS)
        if trials.empty:
            raise UserError(f"{runs / search}: the study holds no finished trial")
        frames.append(trials)
        summaries.append(search_summary(trials, timing, hardware, search_command(runs / search)))
    write_text_atomic(out / "trials.csv", pd.concat(frames).to_csv(index=False))
    write_text_atomic(out / "summary.csv", pd.DataFrame(summaries).to_csv(index=False))


def by_pruner(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std over the seeds of each pruner's searches (std NaN with one seed)."""
    columns = ["wall_s", "cpu_s", "best_val_nll", "epochs", "trials_complete", "trials_pruned"]
    stats = summary.groupby("pruner")[columns].agg(["mean", "std"])
    stats[("seeds", "count")] = summary.groupby("pruner").seed.count()
    return stats.reindex([pruner for pruner in (BASELINE, *PRUNED_CONDITIONS) if pruner in stats.index])


def verdict(summary: pd.DataFrame, pruned: str = PRUNED) -> tuple[bool | None, str]:
    """Whether the target is met by the ``pruned`` condition: its searches' mean best is no worse than the
    unpruned ones' by more than the seeds' spread (the larger of the two conditions' std over seeds), AND their
    mean wall time is at most TARGET_WALL_RATIO of the unpruned one. None (undecided) while a condition has fewer
    than 2 seeds."""
    stats = by_pruner(summary)
    if not {BASELINE, pruned} <= set(stats.index):
        return None, f"the summary needs both a {BASELINE!r} and a {pruned!r} search"
    best, wall = stats["best_val_nll"], stats["wall_s"]
    ratio = wall.loc[pruned, "mean"] / wall.loc[BASELINE, "mean"]
    worse = best.loc[pruned, "mean"] - best.loc[BASELINE, "mean"]
    spread = max(best.loc[pruned, "std"], best.loc[BASELINE, "std"])
    timing = f"wall time ratio {ratio:.2f} (target ≤ {TARGET_WALL_RATIO:.2f})"
    if math.isnan(spread):
        return None, f"one seed per pruner gives no spread; {timing}"
    same_best = worse <= spread
    fast = ratio <= TARGET_WALL_RATIO
    best_text = (
        f"pruned best − unpruned best = {worse:+.2f} nats, "
        f"{'within' if same_best else 'outside'} the seeds' spread of {spread:.2f}"
    )
    return bool(same_best and fast), f"{best_text}; {timing}"


def render(out: Path) -> None:
    """report.md and best_vs_time.png from ``out``'s trials.csv and summary.csv alone."""
    trials, summary = (_read_csv(out / name) for name in ("trials.csv", "summary.csv"))
    write_text_atomic(out / "report.md", report_markdown(summary))
    plot_best_vs_time(trials, out / "best_vs_time.png")


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read ({error})") from None


def report_markdown(summary: pd.DataFrame) -> str:
    """The report: target, verdict, a table per pruner (mean ± std over seeds), per search, and how it ran."""
    stats = by_pruner(summary)
    pruned_here = [pruner for pruner in PRUNED_CONDITIONS if pruner in stats.index] or [PRUNED]
    seeds = sorted(summary.seed.unique())
    lines = [
        "# Does pruning pay? TPE on dna with median pruning against none",
        "",
        "Issue #28's target: TPE over the learning rate, the width and K on dna, 40 trials, with the median pruner",
        "finds the same best `val/best_nll` as without a pruner, within the spread over 3 sampler seeds, in at most",
        f"{TARGET_WALL_RATIO:.0%} of the wall time.",
        "",
    ]
    if len(seeds) < PLANNED_SEEDS:
        lines += [
            f"**Partial:** only {len(seeds)} of the {PLANNED_SEEDS} planned sampler seeds finished "
            f"(seeds {', '.join(map(str, seeds))}).",
            "",
        ]
    lines += ["## Verdict", ""]
    for pruned in pruned_here:
        met, reason = verdict(summary, pruned)
        label = "" if pruned == PRUNED else f" by {pruned}"
        lines += [f"**Target{label} {'undecided' if met is None else 'met' if met else 'not met'}**: {reason}.", ""]
    lines += [
        "`median_patient` is the median pruner with 10 startup trials (TPE's own) and 30 warm-up epochs (early",
        "stopping's patience): it never stops a trial before early stopping could have.",
        "",
        "The rule: met when the pruned searches' mean best is worse than the unpruned ones' by no more than the",
        "seeds' spread (the larger of the two pruners' std over seeds), and their mean wall time is at most",
        f"{TARGET_WALL_RATIO:.0%} of the unpruned searches' mean.",
        "",
        "## By pruner",
        "",
        f"Mean ± std over the sampler seeds ({', '.join(map(str, seeds))}); best `val/best_nll` in nats over the",
        "completed trials (a pruned trial's value is from the epoch it stopped at, so it never counts).",
        "",
        "| pruner | seeds | wall time (s) | CPU time (s) | best val/best_nll | epochs trained | trials complete "
        "| trials pruned |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for pruner, row in stats.iterrows():
        cells = [
            _mean_std(row["wall_s"], 0),
            _mean_std(row["cpu_s"], 0),
            _mean_std(row["best_val_nll"], 2),
            _mean_std(row["epochs"], 0),
            _mean_std(row["trials_complete"], 1),
            _mean_std(row["trials_pruned"], 1),
        ]
        lines.append(f"| {pruner} | {int(row[('seeds', 'count')])} | " + " | ".join(cells) + " |")
    lines += [
        "",
        *_ratios(stats),
        "",
        "## By search",
        "",
        "| search | wall time (s) | CPU time (s) | best val/best_nll | epochs trained | complete | pruned | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary.itertuples():
        lines.append(
            f"| {row.search} | {row.wall_s:.0f} | {row.cpu_s:.0f} | {row.best_val_nll:.2f} | {row.epochs} "
            f"| {row.trials_complete} | {row.trials_pruned} | {row.trials_failed} |"
        )
    lines += [
        "",
        "## Best so far against time",
        "",
        "![best val/best_nll so far against time](best_vs_time.png)",
        "",
        f"{FIGURE_CAPTION}, one line per search (`best_vs_time.png`).",
        "",
        *_how_it_ran(summary),
    ]
    return "\n".join(lines)


def _mean_std(stat: pd.Series, digits: int) -> str:
    mean, std = stat["mean"], stat["std"]
    return f"{mean:.{digits}f}" if pd.isna(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _ratios(stats: pd.DataFrame) -> list[str]:
    lines = []
    for pruned in PRUNED_CONDITIONS:
        if not {BASELINE, pruned} <= set(stats.index):
            continue
        wall, cpu, epochs = (
            stats.loc[pruned, (name, "mean")] / stats.loc[BASELINE, (name, "mean")]
            for name in ("wall_s", "cpu_s", "epochs")
        )
        lines.append(
            f"{pruned} against unpruned, ratio of the means: wall time {wall:.2f}, CPU time {cpu:.2f}, "
            f"epochs trained {epochs:.2f}."
        )
    return lines


def _how_it_ran(summary: pd.DataFrame) -> list[str]:
    hardware = " / ".join(summary.hardware.unique())
    seeds = " ".join(str(seed) for seed in sorted(summary.seed.unique()))
    report_command = shlex.join(
        ["python", "experiments/search_pruning/report.py", "runs/search_pruning", "experiments/search_pruning"]
        + ["--hardware", hardware]
    )
    return [
        "## How it ran",
        "",
        f"Hardware: {hardware}.",
        "",
        "Wall and CPU seconds are each search's own, from its start to its end (run.py, `OMP_NUM_THREADS=1`); epochs",
        "trained are summed over its trials' `results.json`. The searches, as their sweeps' `multirun.yaml` record",
        "them:",
        "",
        "```bash",
        *summary.command,
        "```",
        "",
        "To run them again and redraw this report, from the repository root:",
        "",
        "```bash",
        f"MADE_DATA_DIR=../shared/data python experiments/search_pruning/run.py runs/search_pruning --seeds {seeds}",
        *[
            f"MADE_DATA_DIR=../shared/data python experiments/search_pruning/run.py runs/search_pruning --seeds {seed} "
            f"--conditions {condition}  # one driver per seed, all at once"
            for condition in PRUNED_CONDITIONS[1:]
            if condition in set(summary.pruner)
            for seed in sorted(summary[summary.pruner == condition].seed)
        ],
        report_command,
        "python experiments/search_pruning/report.py --from-csv experiments/search_pruning  # from the CSVs alone",
        "```",
        "",
    ]


def plot_best_vs_time(trials: pd.DataFrame, path: Path) -> None:
    """Best val/best_nll over the completed trials so far against seconds since the search started; a line per
    search, coloured by pruner, dashed by seed."""
    figure, (ax,) = subplots(1)
    for (search, pruner, seed), group in trials.groupby(["search", "pruner", "seed"], sort=True):
        complete = group[group.state == "COMPLETE"].sort_values("complete_s")
        if complete.empty:
            continue
        best = complete.value.cummin()
        end = group.complete_s.max()
        times = [*complete.complete_s, end]
        style = LINESTYLES[seed % len(LINESTYLES)]
        ax.step(times, [*best, best.iloc[-1]], where="post", color=COLOURS.get(pruner), linestyle=style, label=search)
    ax.set_xlabel("seconds since the search's first trial started")
    ax.set_ylabel("best val/best_nll so far (nats)")
    ax.set_title("TPE on dna: median pruning against none")
    legend_below(ax, ncol=2)
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", type=Path, help="run.py's out dir (six sweep dirs and timings.json)")
    parser.add_argument("out", type=Path, help="where trials.csv, summary.csv, report.md and the figure go")
    parser.add_argument("--hardware", help="the machine and how the searches shared it, as the report states it")
    parser.add_argument("--from-csv", action="store_true", help="redraw report.md and the figure from out's CSVs")
    args = parser.parse_args()
    with exit_on_user_error("report.py"):
        if args.from_csv != (args.runs is None):
            raise UserError("give either a runs dir and an out dir, or --from-csv and the out dir")
        if not args.from_csv:
            if not args.hardware:
                raise UserError("--hardware is needed with a runs dir: the report states the machine it ran on")
            collect(args.runs, args.out, args.hardware)
        render(args.out)


if __name__ == "__main__":
    main()
