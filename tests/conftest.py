"""Shared test helpers."""

import torch

from made_exp.made import MADE


def random_made(input_dim: int, num_masks: int = 3, seed: int = 0, **kwargs) -> MADE:
    """A float64 MADE with every parameter drawn from N(0, 1), so the masks' models differ visibly."""
    torch.manual_seed(seed)
    model = MADE(input_dim, kwargs.pop("hidden_sizes", [32]), num_masks=num_masks, seed=seed, **kwargs).double()
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter)
    return model
