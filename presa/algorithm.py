"""PreSa and its CPL ablation behind bench.interfaces.Algorithm.

`PreSa` = CPL preference loss + HALO/KTO safety score under a Lagrangian constraint (presa.trainer);
`CPL` = the same trainer with the safety term switched off (preference learning alone).
`train_many` trains several cells that differ only in seed / threshold as one batched ensemble.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

from bench.errors import BadInput
from bench.interfaces import Algorithm, TrainInputs, TrainOutput, TrainSpec
from presa.config import PreSaConfig, resolve_config


class PreSa(Algorithm):
    """Offline safe policy learning from preferences and safety labels, without reward/cost models."""

    name: ClassVar[str] = "presa"
    uses_ground_truth: ClassVar[bool] = False
    needs_feedback: ClassVar[bool] = True
    #: Config values this algorithm fixes before the user's overrides.
    base_config: ClassVar[dict[str, Any]] = {}

    @classmethod
    def config_for(cls, spec: TrainSpec) -> PreSaConfig:
        return resolve_config(
            spec.task.suite, spec.profile.train_steps, spec.profile.warmup_fraction, spec.overrides, cls.base_config,
            cls.name,
        )

    def train(self, spec: TrainSpec, inputs: TrainInputs) -> TrainOutput:
        return self.train_many([spec], [inputs])[0]

    @classmethod
    def train_many(
        cls, specs: Sequence[TrainSpec], inputs_list: Sequence[TrainInputs], ensemble_size: int | None = None
    ) -> list[TrainOutput]:
        """Train cells that differ only in seed / threshold (and hence feedback) as batched models of
        at most ``ensemble_size`` cells (None: all together on a GPU, one at a time on CPU, where
        batching was measured to be slower; see presa.trainer.CPU_ENSEMBLE_SIZE).

        Each cell gets its own TrainOutput, equal (to float tolerance) to training it alone.
        """
        from presa.trainer import build_cell, train_cells  # torch: imported only when training

        if len(specs) != len(inputs_list) or not specs:
            raise BadInput("presa train_many: give one TrainInputs per TrainSpec (and at least one)")
        for inputs in inputs_list:
            if inputs.dataset is not None:
                raise BadInput("presa learns from feedback only: TrainInputs.dataset (ground truth) must be None")
        cells = [build_cell(spec, cls.config_for(spec), inputs) for spec, inputs in zip(specs, inputs_list)]
        return train_cells(cells, inputs_list, ensemble_size)


class CPL(PreSa):
    """Ablation: Contrastive Preference Learning alone (no safety labels used, no multiplier)."""

    name: ClassVar[str] = "cpl"
    base_config: ClassVar[dict[str, Any]] = {"use_safety": False}
