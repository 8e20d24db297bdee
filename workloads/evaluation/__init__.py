"""Final evaluation of trained checkpoints (`energy-at eval`): robustness and attack energies."""
from workloads.evaluation.checkpoint import (
    CheckpointError,
    TrialRef,
    build_from_config,
    load_config,
    load_model,
    load_trial,
    resolve,
    trial_data,
)
from workloads.evaluation.robust import AttackSpec, EvalResult, evaluate, parse_attacks, targeted_pgd

__all__ = ["AttackSpec", "CheckpointError", "EvalResult", "TrialRef", "build_from_config", "evaluate",
           "load_config", "load_model", "load_trial", "parse_attacks", "resolve", "targeted_pgd", "trial_data"]
