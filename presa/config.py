"""PreSa's configuration: one documented dataclass, defaults cited next to each field.

Sources: [TraC] Gong et al., AAAI 2025 (github.com/zgong11/TraC, the authors' precursor), [CPL]
Hejna et al., ICLR 2024 (github.com/jhejna/cpl), [PreSa] arXiv 2512.20173 (abstract and reviews),
[KTO] Ethayarajh et al. 2024. Fields marked "inferred" are choices the paper does not state; they
are the ones that make the safety constraint attainable (see docs/presa.md for the measurements).

Budgets (gradient steps, warm-up share, logging, evaluation, checkpoints) come from the Profile,
overrides from ``spec.overrides`` (field name -> value, coerced by bench.settings' one rule; an unknown
field raises BadInput).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from bench.errors import BadInput
from bench.settings import apply_overrides

ACTOR_TYPES = ("deterministic", "gaussian")
REFERENCE_POINTS = ("learned", "zero", "kto")
CONSTRAINT_FORMS = ("mean", "log")
DELTA_MODES = ("separation", "absolute", "relative")
S_REF_MODES = ("measured", "analytic")
LAMBDA_PARAMS = ("projected", "log")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
SCORE_NORMS = ("sum", "mean")


@dataclass
class PreSaConfig:
    """Hyperparameters of one PreSa (or CPL ablation) run."""

    # --- policy network ------------------------------------------------------------------------
    #: Hidden layer widths of the actor MLP. [TraC/CPL: [256, 256]]
    hidden_sizes: tuple[int, ...] = (256, 256)
    #: Dropout after each hidden layer during training. [TraC/CPL: 0.25]
    dropout: float = 0.25
    #: "deterministic": log pi(a|s) = -||mu(s) - a||^2 (CPL/TraC code); "gaussian": a learned
    #: state-dependent log-std (log pi unbounded above). [CPL/TraC: deterministic. Measured on
    #: BallCircle (docs/presa.md): the Gaussian raises S by shrinking its std instead of moving its
    #: mean, and ends unsafe]
    actor: str = "deterministic"
    #: Bounds of the Gaussian actor's log-std (soft-clamped with tanh). [CPL's DiagonalGaussian: -5, 2]
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    #: Orthogonal initialisation gain of hidden layers (output layers use 0.01). [CPL/TraC: orthogonal init]
    init_gain: float = math.sqrt(2.0)

    # --- optimisation --------------------------------------------------------------------------
    #: Adam learning rate of the policy in the joint phase. [TraC/CPL: 1e-4; TraC also ramps it up
    #: from 0.1x over the first 10k joint steps]
    lr: float = 1e-4
    #: Learning rate of the BC warm-up; 0 = lr. Short budgets need a larger one for BC to converge
    #: (measured: 600 BC steps at 1e-4 leave the reference far below BC-All). [TraC/CPL: = lr]
    warmup_lr: float = 0.0
    #: Preference pairs (and, separately, labelled safety segments) per gradient step. [TraC/CPL: 96]
    batch_size: int = 96
    #: Transitions per behaviour-cloning step; 0 = batch_size * segment_length (as many state-action
    #: pairs as a batch of segments). [CPL: BC on segments of the same batch size]
    bc_batch_size: int = 0
    #: Gradient steps in total and of the BC warm-up; 0 = from the profile (train_steps,
    #: warmup_fraction). [TraC: 100k steps, 30k of them BC]
    train_steps: int = 0
    warmup_steps: int = -1

    # --- score and preference loss -------------------------------------------------------------
    #: Temperature of the segment score alpha * sum_t gamma^t (log pi - log pi_ref); 0 = per-suite
    #: default (see SUITE_ALPHA). [TraC: 0.2 Bullet, 0.1 Safety-Gymnasium]
    alpha: float = 0.0
    #: Discount inside the segment score. 1 = undiscounted, as the teacher's labels (undiscounted
    #: sums of reward and cost) and jhejna/cpl's loss (no gamma). [CPL code: none; TraC: 0.99]
    gamma: float = 1.0
    #: "sum": the score sums over the segment (CPL); "mean": divided by sum_t gamma^t, so that the
    #: score's scale does not grow with the segment length. [inferred]
    score_norm: str = "sum"
    #: CPL's conservative bias b in logit = score(preferred) - b * score(other). [TraC/CPL: 0.75]
    bias: float = 0.75
    #: Weight of a behaviour-cloning term on all dataset transitions during the joint phase; keeps the
    #: policy on the data's support. [CPL's bc_coeff; inferred for PreSa]
    bc_coeff: float = 0.0

    # --- safety term ---------------------------------------------------------------------------
    #: False = plain CPL (the "cpl" ablation): no safety score, no multiplier. [ablation]
    use_safety: bool = True
    #: The constraint level. With delta_mode "separation" (default): the share of the attainable
    #: separation S must keep, S >= S_ref + delta (S* - S_ref); with "absolute": S >= delta (the
    #: paper's 0.9 / 0.95). [PreSa: 0.9 or 0.95 absolute; separation share chosen on the development
    #: split, docs/presa.md]. Frozen at 0.05 by development round 2 (docs/presa.md, "Development
    #: round 2 (delta < 0.25)"; raw results docs/results/presa-issue14-round2/dev/); round 1 chose 0.25.
    delta: float = 0.05
    #: "separation": S >= S_ref + delta (S* - S_ref), S_ref the score of the reference policy (every
    #: score 0: log 0.5 with balanced classes and a learned z0), S* the score reached by maximising S
    #: ALONE from pi_ref for ``attainable_steps`` steps (measured, so the bound is attainable by
    #: construction); "absolute": S >= delta; "relative": S >= delta * S_max, S_max the per-segment
    #: upper bound. [inferred]
    delta_mode: str = "separation"
    #: How S_ref (delta_mode separation) is obtained: "measured" = the mean training-batch S of
    #: pi_ref itself on dropout batches, the same estimator as S and S* (issue 27: the analytic value
    #: ignores dropout noise, so the first joint S sat 0.01 nats BELOW it and part of the margin only
    #: offset that noise); "analytic" = every score 0 (log 0.5 with balanced classes), the rule of
    #: stop 24 and earlier, kept to reproduce those results. [inferred]
    s_ref: str = "measured"
    #: Steps of the safety-only run that measures S* (delta_mode separation); 0 = a quarter of the
    #: joint phase (at least 100). Costs about a third of a joint step each. [inferred]
    attainable_steps: int = 0
    #: Share of the pairs and of the safety labels held out (bench.feedback.FeedbackView.split with
    #: the cell's seed, the same split Safe-RLHF uses): held-out S, gap and preference accuracy are
    #: logged; the learner never trains on them. [inferred]
    holdout_fraction: float = 0.1
    #: KTO/HALO reference point z0 in v = sigmoid(+-(score - z0)): "learned" (one scalar per cell,
    #: fitted by gradient ascent on S, so that S measures how well safe and unsafe segments are
    #: SEPARATED by the score, not the absolute likelihood the deterministic actor caps), "zero"
    #: (TraC) or "kto" (the detached batch mean of the scores, clamped at >= 0). [inferred; KTO]
    reference_point: str = "learned"
    #: Adam learning rate of the learned reference point. [inferred]
    z0_lr: float = 1e-2
    #: Per-step mean (not sum) in the SAFETY score: alpha_s * mean_t (log pi - log pi_ref), so one
    #: delta means the same on 20-step and 200-step segments. [inferred]
    safety_score_norm: str = "mean"
    #: "mean": constrain mean_j v_j >= delta (the paper's S); "log": mean_j log v_j >= log delta
    #: (minus TraC's cross-entropy; its gradient does not vanish on badly scored segments).
    #: [inferred; measured on BallCircle: the mean form leaves the policy unsafe, the log form not]
    constraint_form: str = "log"
    #: Temperature of the score inside the safety term (per-step units with safety_score_norm mean);
    #: 0 = alpha. [inferred; chosen on the development split]
    safety_alpha: float = 5.0
    #: Weight of unsafe segments in S relative to safe ones (1 = the paper's plain mean). [TraC's
    #: eta: 0.25 on Bullet; inferred for PreSa]
    unsafe_weight: float = 1.0
    #: Also scale unsafe segments' weight by n_safe / n_unsafe of the batch, so each class counts
    #: by its weight rather than its frequency. [TraC: class-balanced weights; inferred]
    balance_labels: bool = True
    #: Initial multiplier. [PreSa reviews: tuned initial value; 1.0]
    lambda_init: float = 1.0
    #: Multiplier step size eta_lambda; with delta_mode separation the violation is divided by
    #: S* - S_ref, so eta is per unit of the attainable separation. [PreSa reviews: tuned; chosen on
    #: the development split]
    lambda_lr: float = 2e-2
    #: "projected": lambda <- clip(lambda + eta (delta - S), 0, lambda_max); "log": log lambda <-
    #: log lambda + eta (delta - S) (always positive, multiplicative). [inferred]
    lambda_param: str = "log"
    #: Upper bound of lambda: far above where it settles, so that it never decides the trade-off
    #: (with the old absolute target, lambda sat at this cap; docs/presa.md). [inferred]
    lambda_max: float = 1000.0
    #: False = keep lambda at lambda_init (the "fixed lambda" ablation). [ablation]
    dual_ascent: bool = True

    # --- bookkeeping ---------------------------------------------------------------------------
    #: Labelled segments evaluated per forward pass when computing reference log-likelihoods.
    reference_chunk: int = 4096
    #: torch.compile mode of the training forward pass: "off" or a torch.compile mode ("default",
    #: "reduce-overhead" = CUDA graphs, "max-autotune"). Off by default: on one CPU core the compiled
    #: step ran at 0.59x the eager one after 17 s of compilation (BallCircle, batch 96; docs/presa.md);
    #: on a GPU, where a PreSa step is kernel-launch-bound, "reduce-overhead" is the one to try.
    compile: str = "off"

    def validate(self) -> None:
        """Raise BadInput naming the first bad field."""
        choices = {
            "actor": ACTOR_TYPES,
            "reference_point": REFERENCE_POINTS,
            "constraint_form": CONSTRAINT_FORMS,
            "delta_mode": DELTA_MODES,
            "s_ref": S_REF_MODES,
            "lambda_param": LAMBDA_PARAMS,
            "score_norm": SCORE_NORMS,
            "safety_score_norm": SCORE_NORMS,
            "compile": COMPILE_MODES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise BadInput(f"presa: {name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        checks = [
            ("dropout", 0.0 <= self.dropout < 1.0, "in [0, 1)"),
            ("lr", self.lr > 0, "> 0"),
            ("warmup_lr", self.warmup_lr >= 0, ">= 0"),
            ("batch_size", self.batch_size > 0, "> 0"),
            ("bc_batch_size", self.bc_batch_size >= 0, ">= 0"),
            ("gamma", 0.0 < self.gamma <= 1.0, "in (0, 1]"),
            ("bias", 0.0 < self.bias <= 1.0, "in (0, 1]"),
            ("delta", 0.0 < self.delta < 1.0, "in (0, 1)"),
            ("alpha", self.alpha > 0, "> 0"),
            ("lambda_init", self.lambda_init >= 0, ">= 0"),
            ("lambda_lr", self.lambda_lr >= 0, ">= 0"),
            ("lambda_max", self.lambda_max > 0, "> 0"),
            ("bc_coeff", self.bc_coeff >= 0, ">= 0"),
            ("z0_lr", self.z0_lr >= 0, ">= 0"),
            ("attainable_steps", self.attainable_steps >= 0, ">= 0"),
            ("holdout_fraction", 0.0 <= self.holdout_fraction < 0.5, "in [0, 0.5)"),
            ("unsafe_weight", self.unsafe_weight > 0, "> 0"),
            ("safety_alpha", self.safety_alpha > 0, "> 0"),
            ("log_std_min", self.log_std_min < self.log_std_max, "< log_std_max"),
            ("hidden_sizes", len(self.hidden_sizes) > 0 and all(h > 0 for h in self.hidden_sizes), "non-empty positive widths"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise BadInput(f"presa: {name}={getattr(self, name)!r} must be {want}")
        if self.lambda_param == "log" and self.lambda_init <= 0:
            raise BadInput("presa: lambda_param='log' needs lambda_init > 0")
        if self.warmup_steps > self.train_steps:
            raise BadInput(f"presa: warmup_steps={self.warmup_steps} exceeds train_steps={self.train_steps}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Score temperature per suite. [TraC: alpha 0.2 for Bullet tasks, 0.1 for Safety-Gymnasium]
SUITE_ALPHA = {"bullet": 0.2, "safety-gymnasium": 0.1}


def resolve_config(
    suite: str,
    train_steps: int,
    warmup_fraction: float,
    overrides: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
    owner: str = "presa",
) -> PreSaConfig:
    """Defaults, then ``base`` (an algorithm's own defaults, e.g. CPL's), then the per-suite alpha and
    the profile budget for fields left at their "from elsewhere" value, then user overrides.
    ``owner`` (the algorithm's name) is named in the messages of refused overrides."""
    config = PreSaConfig()
    for source in (base or {}, overrides or {}):
        apply_overrides(config, source, owner)  # the one --set coercion rule (bench.settings)
    if config.alpha == 0.0:
        config.alpha = SUITE_ALPHA.get(suite, 0.2)
    if config.safety_alpha == 0.0:
        config.safety_alpha = config.alpha
    if config.train_steps == 0:
        config.train_steps = int(train_steps)
    if config.warmup_steps < 0:
        config.warmup_steps = int(round(warmup_fraction * config.train_steps))
    config.validate()
    return config
