"""Learner registry: CLI key → optimizer, fixed options, the historical name written to logs."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

from forgetting_common.errors import UserError

from upgd.optim import (
    EWC,
    MAS,
    PGD,
    SGD,
    SI,
    Adam,
    FeatureUPGD,
    RWalk,
    ShrinkAndPerturb,
    WeightUPGD,
)


@dataclass(frozen=True)
class LearnerSpec:
    optimizer: type
    name: str  # the learner's ``name`` attribute in the original/student code
    second_order: bool = False
    options: dict = field(default_factory=dict)
    source: str = "original"

    def hp_names(self) -> list[str]:
        sig = inspect.signature(self.optimizer.__init__)
        return [
            n for n, p in sig.parameters.items()
            if n not in ("self", "params", "generator") and p.kind is p.POSITIONAL_OR_KEYWORD
        ]

    def defaults(self) -> dict[str, float]:
        sig = inspect.signature(self.optimizer.__init__)
        return {n: sig.parameters[n].default for n in self.hp_names()}


def _upgd(name, **options):
    return LearnerSpec(WeightUPGD, name, options.pop("second_order", False), options)


def _feature(name, **options):
    return LearnerSpec(FeatureUPGD, name, options.pop("second_order", False), options)


LEARNERS: dict[str, LearnerSpec] = {
    "sgd": LearnerSpec(SGD, "sgd"),
    "sgd_with_hesscale": LearnerSpec(SGD, "sgd_with_hesscale", True),
    "pgd": LearnerSpec(PGD, "pgd"),
    "adam": LearnerSpec(Adam, "adam"),
    "shrink_and_perturb": LearnerSpec(ShrinkAndPerturb, "shrink_and_perturb"),
    "ewc": LearnerSpec(EWC, "ewc"),
    "mas": LearnerSpec(MAS, "mas"),
    "si": LearnerSpec(SI, "si"),
    "rwalk": LearnerSpec(RWalk, "rwalk"),
}
for _order in ("fo", "so"):
    for _scale in ("global", "local"):
        _so = _order == "so"
        LEARNERS[f"upgd_{_order}_{_scale}"] = _upgd(
            f"upgd_{_order}_{_scale}", second_order=_so, scaling=_scale)
        LEARNERS[f"upgd_nonprotecting_{_order}_{_scale}"] = _upgd(
            f"upgd_nonprotecting_{_order}_{_scale}", second_order=_so, scaling=_scale, protect=False)
        LEARNERS[f"feature_upgd_{_order}_{_scale}"] = _feature(
            f"feature_upgd_{_order}_{_scale}", second_order=_so, scaling=_scale)
        LEARNERS[f"feature_upgd_nonprotecting_{_order}_{_scale}"] = _feature(
            f"feature_upgd_nonprotecting_{_order}_{_scale}", second_order=_so, scaling=_scale, protect=False)

#: The student project's learners (CLI key → historical class-level name).
STUDENT_LEARNERS: dict[str, LearnerSpec] = {
    "baseline": LearnerSpec(WeightUPGD, "upgd_fo_global", source="student"),
    "weight_norm": LearnerSpec(WeightUPGD, "UPGDScaledWeightNormNoiseLearner", False,
                               {"noise_scale": "weight"}, "student"),
    "grad_norm": LearnerSpec(WeightUPGD, "UPGDScaledGradNormNoiseLearner", False,
                             {"noise_scale": "grad"}, "student"),
    "ratio_norm": LearnerSpec(WeightUPGD, "UPGDScaledAdativeNormNoiseDLearner", False,
                              {"noise_scale": "ratio"}, "student"),
    "usgd": LearnerSpec(WeightUPGD, "USGD_withAdaptiveNoise", False,
                        {"noise_scale": "ratio", "ungated_noise": True}, "student"),
    "upgd_dynamicclippedgradient": LearnerSpec(
        WeightUPGD, "UPGD_DynamicclippedGradient", False,
        {"noise_scale": "ratio", "clipped_grad_bug": True}, "student"),
    "entire_kernel": LearnerSpec(WeightUPGD, "upgd_kernel", False,
                                 {"kernel": "entire", "step_factor": 2.0}, "student"),
    "column_kernel": LearnerSpec(WeightUPGD, "upgd_kernel", False,
                                 {"kernel": "column", "step_factor": 2.0}, "student"),
    "KernelConvexCombi": LearnerSpec(WeightUPGD, "KernelConvexCombi", False,
                                     {"kernel": "convex", "step_factor": 2.0}, "student"),
}
LEARNERS.update(STUDENT_LEARNERS)


def learner_spec(key: str) -> LearnerSpec:
    if key not in LEARNERS:
        raise UserError(f"unknown learner {key!r}; valid learners: {', '.join(sorted(LEARNERS))}")
    return LEARNERS[key]


def validate_hps(key: str, hps: dict[str, str]) -> dict[str, float]:
    """Convert every value with ``float()`` (as the original) and reject keys the learner lacks."""
    spec = learner_spec(key)
    valid = spec.hp_names()
    out: dict[str, float] = {}
    for name, value in hps.items():
        if name not in valid:
            raise UserError(
                f"learner {key!r} takes no hyper-parameter {name!r}; it takes: {', '.join(valid)} "
                f"(runner keys: task, learner, network, seed, n_samples, save_path and the extensions)"
            )
        try:
            out[name] = float(value)
        except ValueError as err:
            raise UserError(f"--{name} {value!r}: expected a number") from err
        _check_range(name, value, out[name])
    return out


#: Hyper-parameters that are rates of an exponential average: 1 would divide by 1 − β^t = 0.
BETAS = ("beta_utility", "beta1", "beta2", "beta_weight", "beta_fisher", "beta_importance")


def _check_range(name: str, text: str, value: float) -> None:
    """Every hyper-parameter is finite; step sizes, noise, decays and penalties are ≥ 0; betas in [0, 1)."""
    if not math.isfinite(value):
        raise UserError(f"--{name} {text}: expected a finite number")
    if name in BETAS:
        if not 0.0 <= value < 1.0:
            raise UserError(f"--{name} {text}: must lie in [0, 1)")
    elif value < 0:
        raise UserError(f"--{name} {text}: must be zero or more")


def make_optimizer(key: str, named_params, hps: dict[str, float], generator=None, **extensions):
    spec = learner_spec(key)
    kwargs = dict(spec.options)
    if spec.optimizer in (WeightUPGD, FeatureUPGD):
        kwargs["second_order"] = spec.second_order
        kwargs.update(extensions)
    return spec.optimizer(list(named_params), generator=generator, **hps, **kwargs)
