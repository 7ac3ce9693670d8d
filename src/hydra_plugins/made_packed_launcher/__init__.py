"""made_exp's packed launcher for Hydra (``hydra/launcher=packed``): ``made_exp.lightning.packed_launch``."""
