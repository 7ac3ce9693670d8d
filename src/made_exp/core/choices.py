"""The allowed values of the model's and the mask schedule's options: plain names, so that the config schema
(``made_exp.runs.config``) can list them without importing torch."""

__all__ = [
    "ACTIVATIONS",
    "DIRECT_CONNECTIONS",
    "RESAMPLE_MODES",
    "INITS",
    "SCHEDULES",
    "OBJECTIVES",
    "WHOLE_BANK_OBJECTIVES",
    "LOG_Z_METHODS",
    "POE_LOG_Z_METHODS",
    "ANNEALING_SCHEDULES",
]

ACTIVATIONS = ("relu", "tanh", "sigmoid")
DIRECT_CONNECTIONS = ("none", "output", "full")
RESAMPLE_MODES = ("full", "ordering", "connectivity")
INITS = ("default", "orthogonal", "xavier_uniform")
SCHEDULES = ("cycle", "fresh")
OBJECTIVES = ("nll", "mixture", "poe", "learned_mixture")
WHOLE_BANK_OBJECTIVES = ("poe", "learned_mixture")  # every training step scores all K bank masks
LOG_Z_METHODS = ("exact", "importance", "smc", "nce")  # the poe objective's training estimator (masks.log_z)
# the test-time product of experts (ensemble=poe), and the poe objective's validation (masks.val_log_z)
POE_LOG_Z_METHODS = ("auto", "exact", "importance", "ais")
ANNEALING_SCHEDULES = ("linear", "sigmoid")  # AIS's inverse temperatures (made_exp.core.ais)
