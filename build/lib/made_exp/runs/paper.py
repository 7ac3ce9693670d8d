"""The paper's test NLLs (nats per example, lower is better) as data, for comparison with our runs.

Only MADE's own figures are recorded. The tables also list baselines (MoB, RBM, FVSBN, NADE,
EoNADE, DARN); they are left out because we have no checked copy of their exact values.

References:
    Germain, Gregor, Murray, Larochelle. MADE: Masked Autoencoder for Distribution
    Estimation. ICML 2015. Table 4 (UCI), Table 6 (binarized MNIST).
"""

from __future__ import annotations

__all__ = ["ONE_MASK", "MASK_SAMPLING", "PAPER_UCI", "PAPER_MNIST", "SOURCES", "paper_value", "mnist_column"]

ONE_MASK = "one mask"  # the paper's "MADE" column: one mask for the whole run
MASK_SAMPLING = "mask sampling"  # the paper's "MADE mask sampling" column

# Table 4: dataset -> column -> test NLL.
PAPER_UCI: dict[str, dict[str, float]] = {
    "adult": {ONE_MASK: 13.12, MASK_SAMPLING: 13.13},
    "connect4": {ONE_MASK: 11.90, MASK_SAMPLING: 11.90},
    "dna": {ONE_MASK: 83.63, MASK_SAMPLING: 79.66},
    "mushrooms": {ONE_MASK: 9.68, MASK_SAMPLING: 9.69},
    "nips": {ONE_MASK: 280.25, MASK_SAMPLING: 277.28},
    "ocr_letters": {ONE_MASK: 28.34, MASK_SAMPLING: 30.04},
    "rcv1": {ONE_MASK: 47.10, MASK_SAMPLING: 46.74},
    "web": {ONE_MASK: 28.53, MASK_SAMPLING: 28.25},
}


def mnist_column(num_hidden_layers: int, num_masks: int) -> str:
    """The Table 6 row name of a MADE with this depth and this many training masks."""
    layers = "hidden layer" if num_hidden_layers == 1 else "hidden layers"
    masks = "mask" if num_masks == 1 else "masks"
    return f"{num_hidden_layers} {layers}, {num_masks} {masks}"


# Table 6: row -> test NLL. The published command behind it uses 2 x 8000 ReLU units.
PAPER_MNIST: dict[str, float] = {
    mnist_column(2, 32): 86.64,
}

SOURCES: dict[str, str] = {
    **{dataset: "Germain et al. 2015, Table 4" for dataset in PAPER_UCI},
    "binarized_mnist": "Germain et al. 2015, Table 6",
}


def paper_value(dataset: str, column: str) -> float | None:
    """The paper's test NLL for ``dataset`` in ``column``, or None where the paper reports none.

    >>> paper_value("dna", MASK_SAMPLING), paper_value("binarized_mnist", mnist_column(2, 32))
    (79.66, 86.64)
    """
    table = PAPER_MNIST if dataset == "binarized_mnist" else PAPER_UCI.get(dataset, {})
    return table.get(column)
