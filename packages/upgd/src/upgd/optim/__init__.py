"""Optimizers of the original UPGD repository and of the student project (one update per sample)."""

from upgd.optim.base import NamedOptimizer
from upgd.optim.baselines import EWC, MAS, PGD, SGD, SI, Adam, RWalk, ShrinkAndPerturb
from upgd.optim.feature import FeatureUPGD
from upgd.optim.weight import WeightUPGD

__all__ = [
    "EWC",
    "MAS",
    "PGD",
    "SGD",
    "SI",
    "Adam",
    "FeatureUPGD",
    "NamedOptimizer",
    "RWalk",
    "ShrinkAndPerturb",
    "WeightUPGD",
]
