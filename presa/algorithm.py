"""PreSa and its CPL ablation behind bench.interfaces.Algorithm.

`PreSa` = CPL preference loss + HALO/KTO safety score under a Lagrangian constraint (presa.trainer);
`CPL` = the same trainer with the safety term switched off (preference learning alone).
Both build a `presa.trainer.PreSaLearner` for bench.training's loop; cells that differ only in
seed / threshold train as one batched ensemble.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

from bench.errors import BadInput
from bench.interfaces import Algorithm, Learner, TrainInputs, TrainSpec
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
            spec.task.suite, spec.profile.train_steps, spec.profile.warmup_fraction, spec.overrides, cls.base_config
        )

    @classmethod
    def learner(cls, specs: Sequence[TrainSpec], inputs_list: Sequence[TrainInputs]) -> Learner:
        """One batched ensemble of these cells (same config, data, segment length and device)."""
        import torch

        from bench.devices import resolve_device
        from presa import trainer  # torch: imported only when training

        for inputs in inputs_list:
            if inputs.dataset is not None:
                raise BadInput("presa learns from feedback only: TrainInputs.dataset (ground truth) must be None")
        cells = [trainer.build_cell(spec, cls.config_for(spec), inputs) for spec, inputs in zip(specs, inputs_list)]
        return trainer.learner(cells, inputs_list, torch.device(resolve_device(specs[0].device)))

    @classmethod
    def cells_per_learner(cls, specs: Sequence[TrainSpec], requested: int | None) -> int:
        """``requested``, else all cells on a GPU and one at a time on CPU, where batching was measured
        to be slower (presa.trainer.CPU_ENSEMBLE_SIZE). Cells of different configs or devices raise."""
        from bench.devices import resolve_device
        from presa.trainer import CPU_ENSEMBLE_SIZE

        first = cls.config_for(specs[0]).to_dict()
        for spec in specs[1:]:
            config = cls.config_for(spec).to_dict()
            if config != first:
                diff = sorted(k for k, v in config.items() if first[k] != v)
                raise BadInput(f"presa: cells trained together must share one config (they differ in {', '.join(diff)}); train them apart")
            if spec.device != specs[0].device:
                raise BadInput("presa: cells trained together must share one device; train them apart")
        if requested is not None:
            return requested
        return len(specs) if resolve_device(specs[0].device).startswith("cuda") else CPU_ENSEMBLE_SIZE


class CPL(PreSa):
    """Ablation: Contrastive Preference Learning alone (no safety labels used, no multiplier)."""

    name: ClassVar[str] = "cpl"
    base_config: ClassVar[dict[str, Any]] = {"use_safety": False}
