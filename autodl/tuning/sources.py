"""Where trials come from: a declarative space or a Keras Tuner hypermodel, named by --space."""

from __future__ import annotations

from autodl.config import SearchConfig
from autodl.spaces.schema import SearchSpace, is_hypermodel_spec, load_space


def trial_source(config: SearchConfig) -> tuple[SearchSpace | None, object]:
    """The declarative space (None for a hypermodel) and the object that turns trials into models."""
    if is_hypermodel_spec(config.space):
        from autodl.spaces.kt_adapter import HyperModelTrials

        return None, HyperModelTrials(config.space, max_epochs=config.max_epochs or 100)
    from autodl.tuning.engine import SpaceTrials

    space = load_space(config.space)
    return space, SpaceTrials(space, config.max_epochs, per_fold=config.pruner == "wilcoxon")
