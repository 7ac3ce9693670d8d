"""Every experiment file composes, and the paper configs carry the original release's settings."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from conftest import compose_train
from made_exp.runs.config import CONFIG_DIR, validate_config
from made_exp.runs.paper import PAPER_MNIST, PAPER_UCI

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_validates(experiment):
    cfg = compose_train([f"experiment={experiment}"])
    validate_config(cfg)
    OmegaConf.to_container(cfg.model, resolve=True)


@pytest.mark.parametrize("dataset", [*PAPER_UCI, "binarized_mnist"])
def test_each_paper_dataset_has_an_experiment_on_its_data(dataset):
    assert compose_train([f"experiment=paper_{dataset}"]).data.name == dataset


def test_dna_has_the_published_settings():
    cfg = compose_train(["experiment=paper_dna"])
    assert cfg.optimizer._target_ == "torch.optim.Adadelta"
    assert (cfg.optimizer.rho, cfg.optimizer.eps) == (0.95, 1e-5)
    assert list(cfg.model.hidden_sizes) == [500] and cfg.model.activation == "relu"
    assert cfg.model.direct_connection == "output" and cfg.model.init == "orthogonal"
    assert cfg.masks.schedule == "fresh" and cfg.masks.val_num_masks == 300
    assert (cfg.ensemble.mask_source, cfg.ensemble.num_masks) == ("fresh", 1000)
    assert cfg.callbacks.early_stopping.patience == 30 and cfg.data.batch_size == 100


def test_adult_has_the_published_settings():
    cfg = compose_train(["experiment=paper_adult"])
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.lr == 0.01 and cfg.optimizer.momentum == 0
    assert list(cfg.model.hidden_sizes) == [500] and cfg.model.activation == "tanh"
    assert cfg.model.direct_connection == "output" and cfg.model.init == "orthogonal"
    assert cfg.model.num_masks == 1 and cfg.masks.schedule == "cycle"
    assert cfg.callbacks.early_stopping.patience == 30


def test_mnist_has_the_published_settings_and_the_cpu_variant_only_shrinks_it():
    paper = compose_train(["experiment=paper_binarized_mnist"])
    assert paper.optimizer._target_ == "torch.optim.Adagrad" and paper.optimizer.lr == 0.01
    assert list(paper.model.hidden_sizes) == [8000, 8000] and paper.model.num_masks == 32
    assert paper.masks.schedule == "cycle" and paper.masks.val_num_masks == 32
    assert paper.model.direct_connection == "output" and paper.model.init == "orthogonal"
    cpu = compose_train(["experiment=paper_binarized_mnist_cpu"])
    assert list(cpu.model.hidden_sizes) == [500]
    cpu.model.hidden_sizes = paper.model.hidden_sizes
    assert OmegaConf.to_container(cpu.model) == OmegaConf.to_container(paper.model)
    assert "2 hidden layers, 32 masks" in PAPER_MNIST


def test_command_line_masks_choice_selects_the_other_paper_column():
    one_mask = compose_train(["experiment=paper_dna", "masks=single"])
    assert one_mask.masks.schedule == "cycle" and one_mask.model.num_masks == 1
    assert one_mask.optimizer._target_ == "torch.optim.Adadelta"
    assert compose_train(["experiment=paper_adult", "masks=fresh"]).masks.schedule == "fresh"


@pytest.mark.parametrize("experiment,jobs", [("grid_uci", 2 * 4 * 2), ("grid_num_masks", 6 * 3)])
def test_grid_sweeps_parse_to_the_documented_number_of_jobs(experiment, jobs):
    params = compose_train([f"experiment={experiment}", "data=dna"]).hydra.sweeper.params
    overrides = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    count = 1
    for override in overrides:
        count *= len(list(override.sweep_string_iterator()))
    assert count == jobs
    for override in overrides:  # every swept value composes
        for value in override.sweep_string_iterator():
            validate_config(compose_train([f"experiment={experiment}", f"{override.get_key_element()}={value}"]))


@pytest.mark.parametrize(
    "script",
    sorted((Path(__file__).parents[1] / "experiments").glob("*/*.sh")),
    ids=lambda path: f"{path.parent.name}/{path.name}",
)
def test_every_experiment_script_parses(script):
    """``bash -n``: a script that runs only on a lent GPU or for hours must not fail on a typo when it starts."""
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("round_", [".", "lr1e-4"])
def test_the_poe_estimators_paired_table_is_what_the_committed_scores_give(round_):
    """Adam lr 1e-3 (the recipe's) in poe_estimators/, the second round at lr 1e-4 in poe_estimators/lr1e-4/."""
    script = Path(__file__).resolve().parents[1] / "experiments" / "poe_estimators" / "paired.py"
    folder = script.parent / round_
    scores = sorted(str(path) for path in folder.glob("*_k*/*/results.csv"))
    assert scores, "no committed scores"
    made = subprocess.run([sys.executable, str(script), *scores], capture_output=True, text=True, check=True).stdout
    assert made == (folder / "paired.md").read_text()


def test_the_dna_recipe_table_is_what_the_committed_scores_give_and_the_readme_quotes_it():
    folder = Path(__file__).resolve().parents[1] / "experiments" / "poe_estimators"
    scores = [str(folder / "dna_recipe" / part / "results.csv") for part in ("is", "ais")]
    paired = folder.parent / "objectives_uci" / "paired.py"
    made = subprocess.run([sys.executable, str(paired), *scores], capture_output=True, text=True, check=True).stdout
    assert made == (folder / "dna_recipe" / "recipe.md").read_text()
    best = next(line for line in made.splitlines() if line.startswith("| dna | bank, Jensen | 64 | poe (AIS) |"))
    mixture = next(line for line in made.splitlines() if line.startswith("| dna | bank, Jensen | 64 | mixture |"))
    readme = " ".join((folder / "README.md").read_text().split())
    assert f"K = 64, is {best.split(' | ')[4]} nats (its mixture {mixture.split(' | ')[4]})" in readme


def test_the_poe_estimators_readme_quotes_the_committed_objective_costs():
    root = Path(__file__).resolve().parents[1]
    costs = json.loads((root / "experiments" / "bench" / "objectives_cpu.json").read_text())
    readme = " ".join((root / "experiments" / "poe_estimators" / "README.md").read_text().split())

    def ratio(k: int, objective: str) -> str:
        return f"{costs[f'k{k}_{objective}_vs_jensen']:.0f}x"

    k4 = [ratio(4, name) for name in ("poe_objective_smc", "poe_objective_nce", "poe_objective")]
    k16 = [ratio(16, name) for name in ("poe_objective_smc", "poe_objective_nce", "poe_objective")]
    assert (
        f"at K = 4 a smc step is {k4[0]}, an nce step {k4[1]} and an importance-sampling step {k4[2]} the Jensen step;"
        f" at K = 16, {k16[0]}, {k16[1]} and {k16[2]}." in readme
    )
    samples = f"mixture samples alone is {ratio(4, 'draw_poe_samples')} at K = 4 and {ratio(16, 'draw_poe_samples')}"
    assert samples in readme


def test_the_readme_quotes_the_fine_tuned_products_from_the_paired_table():
    """The README's fine-tuning sentence: each difference from the bank's product, and that it is beyond 2σ."""
    root = Path(__file__).resolve().parents[1]
    rows = {}
    for line in (root / "experiments" / "poe_estimators" / "lr1e-4" / "paired.md").read_text().splitlines()[2:]:
        dataset, k, training, nll, _, difference, beyond = (cell.strip() for cell in line.strip("|").split("|"))
        rows[dataset, int(k), training] = nll, difference.replace("-", "−"), beyond
    readme = " ".join((root / "README.md").read_text().split())
    importance, nce = "PoE objective, warm start", "PoE objective, nce, warm start"
    dna_is, dna_nce = rows["dna", 4, importance], rows["dna", 4, nce]
    mush_is, mush_nce = rows["mushrooms", 4, importance], rows["mushrooms", 4, nce]
    assert all(row[2] == "yes" for row in (dna_is, dna_nce, mush_is, mush_nce))
    assert (
        f"on dna (log Z by importance sampling {dna_is[1]} nats, by noise-contrastive estimation {dna_nce[1]}) "
        f"and mushrooms ({mush_is[1]} and {mush_nce[1]}, reaching {mush_is[0]})" in readme
    )
    assert rows["nips", 4, nce][2] == "no" and "level on nips" in readme
    dna16, mush16 = (
        [rows[dataset, 16, training] for training in (importance, nce)] for dataset in ("dna", "mushrooms")
    )
    assert all(row[2] == "yes" for row in dna16 + mush16)
    assert (
        f"at K = 16 the gain grows to {dna16[0][1]} and {dna16[1][1]} on dna, {mush16[0][1]} and {mush16[1][1]} "
        "on mushrooms" in readme
    )
