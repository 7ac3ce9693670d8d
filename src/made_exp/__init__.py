"""made_exp: MADE (Germain et al., ICML 2015) with mask ensembles, Lightning training and Hydra sweeps."""

__version__ = "0.2.0"
