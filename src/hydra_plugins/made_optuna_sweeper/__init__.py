"""made_exp's Optuna sweeper for Hydra (``hydra/sweeper=optuna_tpe``); the search is ``made_exp.runs.search``."""
