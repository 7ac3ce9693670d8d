"""made-report on a fake multirun: grouping by configuration, mean ± std over seeds, paper values, files."""

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from made_exp.cli.report import main
from made_exp.runs.paper import MASK_SAMPLING, ONE_MASK, PAPER_MNIST, PAPER_UCI, mnist_column, paper_value
from made_exp.runs.records import epoch_rows

DNA_ONE_MASK = [84.0, 85.0, 86.5]
DNA_FRESH = [80.0, 80.5, 81.5]


def fake_config(dataset: str, seed: int, schedule: str, bank: int, test_masks: int | None, hidden=(500,)) -> dict:
    run_dir = f"/logs/train/multiruns/x/{seed}"
    return {
        "seed": seed,
        "data": {
            "_target_": "made_exp.data.datamodules.NPZDataModule",
            "name": dataset,
            "batch_size": 100,
            "seed": seed,
        },
        "model": {"hidden_sizes": list(hidden), "num_masks": bank, "seed": seed, "direct_connection": "output"},
        "masks": {"schedule": schedule, "val_num_masks": 300 if schedule == "fresh" else bank},
        "ensemble": {"num_masks": test_masks, "mask_source": "fresh" if schedule == "fresh" else "bank"},
        "optimizer": {"_target_": "torch.optim.Adadelta", "rho": 0.95},
        "paths": {"output_dir": run_dir, "log_dir": "/logs"},
        "trainer": {"default_root_dir": run_dir, "max_epochs": 1000},
        "logger": {"csv": {"save_dir": run_dir}},
    }


def write_run(run_dir: Path, config: dict, nll: float, wall: float = 10.0, **extra) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / ".hydra").mkdir()
    metrics = {"test/nll": nll, "test/bpd": nll / 124.0, "val/best_nll": nll - 1}
    payload = {"metrics": metrics, "config": config, "git_commit": "abc", "wall_time_s": wall, "epochs": 3, **extra}
    (run_dir / "results.json").write_text(json.dumps(payload))


@pytest.fixture
def multirun(tmp_path: Path) -> Path:
    """Three seeds of dna with one mask and three with mask sampling, plus one failed job."""
    root = tmp_path / "multirun"
    for seed, nll in enumerate(DNA_ONE_MASK):
        write_run(root / f"{seed}_masks=single,seed={seed}", fake_config("dna", seed, "cycle", 1, None), nll, 10.0)
    for seed, nll in enumerate(DNA_FRESH):
        write_run(
            root / f"{3 + seed}_masks=fresh,seed={seed}",
            fake_config("dna", seed, "fresh", 1, 1000),
            nll,
            20.0,
            per_mask_nll=[nll + 3, nll + 4, nll + 6],
        )
    (root / "6_failed" / ".hydra").mkdir(parents=True)
    return root


def read_csv(path: Path) -> dict[str, dict]:
    return {row["configuration"].split(",")[0]: row for row in csv.DictReader(path.open())}


def test_paper_values_are_the_published_made_figures():
    assert paper_value("dna", ONE_MASK) == 83.63 and paper_value("dna", MASK_SAMPLING) == 79.66
    assert paper_value("binarized_mnist", mnist_column(2, 32)) == 86.64
    assert paper_value("binarized_mnist", mnist_column(1, 32)) is None and paper_value("unknown", ONE_MASK) is None
    assert len(PAPER_UCI) == 8 and all(set(v) == {ONE_MASK, MASK_SAMPLING} for v in PAPER_UCI.values())
    assert PAPER_MNIST == {"2 hidden layers, 32 masks": 86.64}


def test_report_groups_seeds_and_compares_with_the_paper(multirun, tmp_path, capsys):
    out = tmp_path / "report"
    main([str(multirun), "--out", str(out)])
    rows = read_csv(out / "report.csv")
    assert set(rows) == {"one mask", "mask sampling (1000 test masks)"}

    one, fresh = rows["one mask"], rows["mask sampling (1000 test masks)"]
    for row, nlls, paper in [(one, DNA_ONE_MASK, 83.63), (fresh, DNA_FRESH, 79.66)]:
        mean = statistics.fmean(nlls)
        assert int(row["n_seeds"]) == 3 and row["seeds"] == "0 1 2"
        assert float(row["test_nll_mean"]) == pytest.approx(mean)
        assert float(row["test_nll_std"]) == pytest.approx(statistics.stdev(nlls))
        assert float(row["paper_nll"]) == paper
        assert float(row["diff"]) == pytest.approx(mean - paper)
        assert float(row["diff_pct"]) == pytest.approx(100 * (mean - paper) / paper)
    assert one["paper_column"] == ONE_MASK and fresh["paper_column"] == MASK_SAMPLING
    assert float(one["wall_time_s_mean"]) == 10.0 and float(fresh["wall_time_s_mean"]) == 20.0

    printed = capsys.readouterr().out
    assert "| dna | one mask, hidden [500] | one mask | 3 | 85.17 ± 1.26 | 83.63 | +1.54 | +1.8 | 10 |" in printed
    markdown = (out / "report.md").read_text()
    assert "85.17 ± 1.26" in markdown and "79.66" in markdown
    assert "6_failed: no results.json" in markdown
    assert "NLL against the number of masks: skipped" in markdown and "samples: skipped" in markdown
    assert (out / "per_mask_nll.png").stat().st_size > 0
    assert not list(out.glob(".*"))  # no temporary file left behind


def test_report_draws_nll_against_masks_and_copies_mnist_samples(tmp_path):
    root = tmp_path / "sweep"
    for bank, nll in [(1, 90.0), (8, 88.0), (32, 87.0)]:
        for seed in range(2):
            run_dir = root / f"k{bank}_s{seed}"
            write_run(run_dir, fake_config("binarized_mnist", seed, "cycle", bank, None, (8000, 8000)), nll + seed)
            (run_dir / "samples.png").write_bytes(f"png of k{bank} s{seed}".encode())
    main([str(root)])
    assert (root / "nll_vs_masks.png").stat().st_size > 0
    assert (root / "samples_binarized_mnist.png").read_bytes() == b"png of k32 s0"  # the best run's grid
    rows = read_csv(root / "report.csv")
    assert float(rows["32 masks"]["paper_nll"]) == 86.64 and rows["8 masks"]["paper_nll"] == ""
    assert "per-mask NLL histogram: skipped" in (root / "report.md").read_text()


def test_runs_differing_in_more_than_masks_get_separate_labelled_rows(tmp_path):
    for lr in (0.1, 0.01):
        config = fake_config("adult", 0, "cycle", 1, None)
        config["optimizer"] = {"_target_": "torch.optim.SGD", "lr": lr}
        write_run(tmp_path / f"lr{lr}", config, 13.0 + lr)
    main([str(tmp_path), "--out", str(tmp_path)])
    labels = [row["configuration"] for row in csv.DictReader((tmp_path / "report.csv").open())]
    assert labels == ["one mask, hidden [500], optimizer.lr=0.01", "one mask, hidden [500], optimizer.lr=0.1"]


def test_a_key_only_newer_runs_record_labels_no_row_unless_rows_would_merge(tmp_path):
    def run(name: str, lr: float, fused: bool | None, nll: float) -> None:
        config = fake_config("adult", 0, "cycle", 1, None)
        config["optimizer"] = {"_target_": "torch.optim.SGD", "lr": lr, **({} if fused is None else {"fused": fused})}
        write_run(tmp_path / name, config, nll)

    run("old", 0.1, None, 13.1)
    run("new", 0.01, True, 13.0)
    main([str(tmp_path), "--out", str(tmp_path)])
    labels = sorted(row["configuration"] for row in csv.DictReader((tmp_path / "report.csv").open()))
    assert labels == ["one mask, hidden [500], optimizer.lr=0.01", "one mask, hidden [500], optimizer.lr=0.1"]

    run("new_lr0.1", 0.1, True, 13.2)  # the same as "old" but for the newly recorded key
    main([str(tmp_path), "--out", str(tmp_path)])
    labels = sorted(row["configuration"] for row in csv.DictReader((tmp_path / "report.csv").open()))
    assert labels == [
        "one mask, hidden [500], optimizer.fused=True, optimizer.lr=0.01",
        "one mask, hidden [500], optimizer.fused=True, optimizer.lr=0.1",
        "one mask, hidden [500], optimizer.lr=0.1",
    ]


@pytest.mark.parametrize("make", ["empty", "missing"])
def test_dir_without_results_exits_2_with_one_line(tmp_path, make):
    target = tmp_path / "runs"
    if make == "empty":
        (target / "0" / ".hydra").mkdir(parents=True)
    result = subprocess.run([sys.executable, "-m", "made_exp.cli.report", str(target)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"made-report: error: no results.json under {target}"
    assert not (target / "report.md").exists()


def test_seeds_are_counted_by_distinct_value(tmp_path):
    """Two runs of seed 0 are one seed; seed 0 with another init stream is another."""
    for name, seed, streams, nll in [
        ("a", 0, None, 84.0),
        ("b", 0, None, 84.2),
        ("c", 1, None, 85.0),
        ("d", 0, {"init": 5, "masks": 0, "data": 0}, 84.5),
    ]:
        config = fake_config("dna", seed, "cycle", 1, None)
        config["seeds"] = streams or {"init": seed, "masks": seed, "data": seed}
        write_run(tmp_path / name, config, nll)
    main([str(tmp_path), "--out", str(tmp_path / "report")])
    (row,) = csv.DictReader((tmp_path / "report" / "report.csv").open())
    assert (row["n_seeds"], row["n_runs"], row["seeds"]) == ("3", "4", "0 0 0 (init=5) 1")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| one mask | 3 (4 runs) | 84.42 ± 0.43 |" in markdown
    assert "seed 0 ran more than once" in markdown


def test_runs_shorter_than_the_protocol_are_labelled(tmp_path):
    """Stopped by an epoch or time cap (recorded, or inferred for older results) or without early stopping."""
    cases = {
        "capped": ({"max_epochs": 20}, {"stopped_by": "max_epochs", "epochs": 20}, 2),
        "old_capped": ({"max_epochs": 400}, {"epochs": 400}, 1),
        "timed": ({"max_epochs": 1000, "max_time": "00:00:07:20"}, {"epochs": 140}, 1),
        "early": ({"max_epochs": 1000}, {"stopped_by": "early_stopping", "epochs": 96}, 1),
        "old_early": ({"max_epochs": 999}, {"epochs": 96}, 1),
    }
    for name, (trainer, extra, seeds) in cases.items():
        for seed in range(seeds):
            config = fake_config("dna", seed, "cycle", 1, None)
            config["trainer"].update(trainer)
            write_run(tmp_path / f"{name}{seed}", config, 85.0 + seed, **extra)
    config = fake_config("dna", 0, "cycle", 1, None)
    config["callbacks"] = {"last_checkpoint": {"filename": "last"}}  # no early stopping at all
    write_run(tmp_path / "no_stopping", config, 86.0, epochs=1000)
    main([str(tmp_path), "--out", str(tmp_path / "report")])
    rows = {
        row["run_dirs"].split()[0].rsplit("/", 1)[-1]: row
        for row in csv.DictReader((tmp_path / "report" / "report.csv").open())
    }
    assert {name: row["short_of_protocol"] for name, row in rows.items()} == {
        "capped0": "trainer.max_epochs=20 (2 of 2 runs)",
        "old_capped0": "trainer.max_epochs=400 (1 of 1 runs)",
        "timed0": "trainer.max_time=00:00:07:20 (1 of 1 runs)",
        "early0": "",
        "old_early0": "",
        "no_stopping": "no early stopping (1 of 1 runs)",
    }
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "85.50 ± 0.71 (short: trainer.max_epochs=20 (2 of 2 runs)) |" in markdown
    assert "shorter than the paper's protocol" in markdown


def test_figure_labels_are_not_cut_off(tmp_path):
    """NLLs that differ in the third decimal make wide tick labels; no text may run off the image's edge."""
    import matplotlib.image

    for bank, nll in [(1, 279.4612), (2, 279.4655), (4, 279.4631), (8, 279.4623)]:
        for seed in range(2):
            write_run(
                tmp_path / f"k{bank}_s{seed}",
                fake_config("nips", seed, "cycle", bank, None),
                nll + 0.001 * seed,
                per_mask_nll=[nll + 0.001, nll + 0.002, nll + 0.004],
            )
    main([str(tmp_path), "--out", str(tmp_path / "report")])
    for figure in ("nll_vs_masks.png", "per_mask_nll.png"):
        pixels = matplotlib.image.imread(tmp_path / "report" / figure)[..., :3]
        frame = [pixels[:3], pixels[-3:], pixels[:, :3], pixels[:, -3:]]
        assert all((edge == 1.0).all() for edge in frame), f"{figure}: something is cut off at an edge"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer.max_epochs=2"], "max_epochs"),
        (["trainer.max_time=00:00:00:01"], "max_time"),
        (
            [
                "callbacks.early_stopping.patience=1",
                "data.num_train=100",
                "model.hidden_sizes=[256]",
                "optimizer.lr=0.05",
            ],
            "early_stopping",
        ),  # overfits within a few epochs
    ],
)
def test_made_train_records_what_ended_training(tmp_path, overrides, expected):
    from conftest import compose_train
    from made_exp.lightning.training import train

    cfg = compose_train(
        [
            "data=synthetic",
            "model.hidden_sizes=[8]",
            "trainer.max_epochs=200",
            "logger=none",
            "module.num_samples=0",
            "~callbacks.rich_progress_bar",
            f"paths.output_dir={tmp_path}",
            *overrides,
        ],
        with_hydra=False,
    )
    assert train(cfg)["stopped_by"] == expected


def test_epoch_rows_of_a_resumed_run_take_the_later_start_s_row_of_a_repeated_epoch(tmp_path):
    logs = {
        0: "epoch,step,val/nll,test/nll\n0,10,5.0,\n1,20,4.0,\n2,30,3.9,\n",  # epoch 2 cut short, repeated
        1: "epoch,step,val/nll,test/nll\n2,30,3.5,\n3,40,3.4,\n3,40,,3.6\n",
    }  # the test's row has no val/nll
    for version, text in logs.items():
        (tmp_path / "csv" / f"version_{version}").mkdir(parents=True)
        (tmp_path / "csv" / f"version_{version}" / "metrics.csv").write_text(text)
    rows = epoch_rows(tmp_path, "val/nll")
    assert [(row["epoch"], row["val/nll"]) for row in rows] == [("0", "5.0"), ("1", "4.0"), ("2", "3.5"), ("3", "3.4")]


def with_seed_keys(config: dict, seed: int) -> dict:
    """``config`` with every seed key a made-train run records set to ``seed``, as ``seed=S`` sets them."""
    config["seeds"] = {"init": seed, "masks": seed, "data": seed, "evaluation": seed}
    config["module"] = {"evaluation_seed": seed, "lr_decay": 1.0}
    config["ensemble"]["seed"] = seed
    return config


def test_runs_differing_only_in_seed_keys_are_one_configuration(tmp_path):
    """``seed=0,1`` sets module.evaluation_seed, ensemble.seed and the seeds streams too: still one row."""
    for seed, nll in enumerate([84.0, 85.0]):
        write_run(tmp_path / f"s{seed}", with_seed_keys(fake_config("dna", seed, "cycle", 1, None), seed), nll)
    main([str(tmp_path), "--out", str(tmp_path / "report")])
    (row,) = csv.DictReader((tmp_path / "report" / "report.csv").open())
    assert (row["configuration"], row["n_seeds"], row["seeds"]) == ("one mask, hidden [500]", "2", "0 1")
    assert float(row["test_nll_mean"]) == 84.5


def captured_figures(monkeypatch) -> dict[str, object]:
    """The figures made-report draws, by file name, instead of written."""
    figures = {}
    monkeypatch.setattr("made_exp.cli.report.save_figure", lambda figure, path: figures.update({path.name: figure}))
    return figures


def test_nll_against_masks_has_one_labelled_line_per_configuration(tmp_path, monkeypatch):
    figures = captured_figures(monkeypatch)
    for lr in (0.1, 0.01):
        for bank in (1, 8):
            for seed in range(2):
                config = with_seed_keys(fake_config("dna", seed, "cycle", bank, None), seed)
                config["optimizer"]["lr"] = lr
                write_run(tmp_path / f"lr{lr}_k{bank}_s{seed}", config, 85.0 - bank / 8 + lr + seed)
    main([str(tmp_path), "--out", str(tmp_path / "report")])
    (ax,) = figures["nll_vs_masks.png"].axes
    assert len(ax.lines) == 2 * 3  # a line (with its two error-bar caps) per learning rate, not per seed
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["fixed bank, hidden [500], optimizer.lr=0.01", "fixed bank, hidden [500], optimizer.lr=0.1"]


def test_a_corrupt_results_json_is_named_and_left_out(multirun, tmp_path, capsys):
    (multirun / "7_cut").mkdir()
    (multirun / "7_cut" / "results.json").write_text('{"metrics": {"test/n')
    main([str(multirun), "--out", str(tmp_path / "report")])
    assert f"made-report: {multirun / '7_cut' / 'results.json'}: unreadable results.json" in capsys.readouterr().err
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert f"- {multirun / '7_cut' / 'results.json'}: unreadable results.json" in markdown
    assert "Runs: 6 from" in markdown


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MADE_DATA_DIR"), reason="set MADE_DATA_DIR to the paper's data")
def test_a_seed_sweep_of_made_train_reports_one_row_of_two_seeds(tmp_path):
    """The README's promise, end to end: ``made-train -m data=dna ... seed=0,1``, then made-report."""
    bin_dir = Path(sys.executable).parent
    train = [str(bin_dir / "made-train"), "-m", "data=dna", "model.hidden_sizes=[8]", "trainer.max_epochs=2"]
    sweep = subprocess.run(
        [*train, "logger=csv", "module.num_samples=0", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    main([str(tmp_path / "sweep")])
    (row,) = csv.DictReader((tmp_path / "sweep" / "report.csv").open())
    assert (row["n_seeds"], row["seeds"], row["configuration"]) == ("2", "0 1", "one mask, hidden [8]")


REPOSITORY = Path(__file__).resolve().parents[1]
COMMITTED_REPORTS = sorted(
    path.parent.relative_to(REPOSITORY)
    for path in (REPOSITORY / "experiments").rglob("report.md")
    if path.read_text().startswith("# MADE: our test NLL against the paper")
)


def test_the_paper_report_is_a_committed_made_report():
    assert Path("experiments/paper") in COMMITTED_REPORTS


@pytest.mark.parametrize("committed", COMMITTED_REPORTS, ids=str)
def test_a_committed_report_is_what_made_report_makes_of_the_committed_runs(committed, tmp_path, monkeypatch):
    """Regenerated from the runs it names (``Runs: N from DIRS.``), byte for byte; its figures are drawn again."""
    monkeypatch.chdir(REPOSITORY)  # the report names its runs relative to the repository's root
    markdown = (committed / "report.md").read_text()
    dirs = markdown.split("\nRuns: ", 1)[1].split(" from ", 1)[1].split(". ", 1)[0].split(", ")
    main([*dirs, "--out", str(tmp_path)])
    assert (tmp_path / "report.md").read_text() == markdown, f"rerun: made-report {' '.join(dirs)} --out {committed}"
    assert (tmp_path / "report.csv").read_bytes() == (committed / "report.csv").read_bytes()
    figures = {path.name for path in committed.glob("*.png")}
    assert figures == {path.name for path in tmp_path.glob("*.png")} and figures
    assert all(f"]({figure})" in markdown for figure in figures)
