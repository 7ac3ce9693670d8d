"""The fields of ``results.json`` (made-train) and ``eval_*.json`` (made-eval, made-compare), a sentence each.

Written by ``made_exp.lightning.training.train``, ``made_exp.lightning.evaluation.evaluate`` and
``made_exp.runs.results.run_metadata``; tests/test_docs_reference.py checks these names against the files a real
run writes, so that a field added or renamed there fails the suite until it is described here.
"""

from __future__ import annotations

# what run_metadata records, in results.json and eval_*.json alike
METADATA = {
    "seeds": "The seed of each random stream (`init`, `masks`, `data`, `evaluation`), resolved from `seed` "
    "unless set apart.",
    "config": "The whole config as composed and resolved (what `.hydra/config.yaml` holds, interpolations "
    "replaced by their values).",
    "git_commit": "The commit of the made_exp checkout the run ran from, taken when it started (`+dirty` for "
    "uncommitted changes); `unknown` when made_exp runs from an installed wheel, whose version "
    "`made_exp_version` then records.",
    "made_exp_version": "The installed made_exp package's version.",
    "wall_time_s": "Seconds from the start of the run (or of the evaluation) to its end, test included; a "
    "resumed run counts its last start only.",
    "hardware": "The machine: `cpu` (its model name), `cpu_count`, `torch_threads`, `torch` and `python` "
    "versions, and `gpu` (the first GPU's name) where there is one.",
}
RESULTS = {
    "metrics": "The numbers measured, by name (the table below), in nats per example unless the name says bpd.",
    "per_mask_nll": "The test NLL of each mask of the test mixture on its own (nats), one per mask; empty when "
    "the ensemble does not score masks one by one.",
    "epochs": "The epochs trained (Lightning's `current_epoch` at the end of fitting).",
    "stopped_by": "What ended training: `early_stopping` (the paper's protocol), `max_epochs`, `max_time`, `pruned` "
    "(a search's pruner, see how-to/pruning.md) or `other`.",
    "best_checkpoint": "The checkpoint tested: the epoch with the best `val/nll` (`checkpoints/best.ckpt`).",
    **METADATA,
}
EVALUATION = {
    "metrics": "The test metrics under that ensemble (the table below).",
    "per_mask_nll": "As in results.json, for the checkpoint scored.",
    "ensemble": "The conf/ensemble/ name it was scored under (`mixture`, `poe`, ...).",
    "overrides": "The `--set KEY=VALUE` overrides of that ensemble's config.",
    "checkpoint": "The checkpoint file scored.",
    "weights_sha256": "A digest of the weights scored, so that made-compare rescores a run that trained on.",
    "device": "Where it was scored (`cpu` or `cuda`).",
    "run_status": "The run's state when it was scored: `finished`, `unfinished` (no results.json yet: still training, "
    "or stopped) or `failed`; made-eval and made-sample warn on an unfinished run.",
    **METADATA,
}
# metric name -> meaning; ``*`` stands for any name the ensemble reports
METRICS = {
    "val/best_nll": "The best validation NLL over the epochs (the checkpoint tested); what a sweeper minimises.",
    "test/nll": "The test NLL of the ensemble (nats per example): mixture, learned mixture, product of experts "
    "(with log Z estimated), best single mask. Logit averaging is NOT a normalised model: under "
    "`ensemble=logit_average` there is no `test/nll`, only `test/unnormalised_nll`.",
    "test/bpd": "`test/nll` in bits per dimension (nats / (D ln 2)).",
    "test/single_mask_nll_mean": "The mean over the test masks of each mask's own test NLL.",
    "test/single_mask_nll_std": "Their standard deviation (0 for one mask).",
    "test/single_mask_nll_best": "The lowest of them.",
    "test/unnormalised_nll": "A product of experts' NLL before log Z is added, or logit averaging's score: "
    "scores of unnormalised models, not NLLs.",
    "test/unnormalised_bpd": "The same in bits per dimension.",
    "test/ensemble/*": "What the ensemble reports about itself: `num_masks`; a product of experts `log_z` and "
    "`log_z_stderr` (and AIS's own figures); a learned mixture `effective_num_masks`, `num_nonzero_weights`, "
    "`em_iterations`; logit averaging, at small D, `log_total_mass` (its total probability mass, not 1).",
}


def _table(fields: dict[str, str], title: str) -> str:
    return "\n".join([f"| {title} | what it holds |", "|---|---|", *(f"| `{k}` | {v} |" for k, v in fields.items())])


def reference() -> str:
    return "\n\n".join(
        [
            "## results.json",
            "A finished made-train run's record, beside its checkpoints; its presence is what marks a run finished.",
            _table(RESULTS, "field"),
            "## eval_*.json",
            "made-eval and made-compare write one per ensemble (and set of `--set` overrides) into the run dir.",
            _table(EVALUATION, "field"),
            "## metrics",
            _table(METRICS, "name"),
        ]
    )


def documented(name: str) -> bool:
    """Whether metric ``name`` is described (exactly, or by a ``*`` pattern)."""
    return name in METRICS or any(k.endswith("*") and name.startswith(k[:-1]) for k in METRICS)
