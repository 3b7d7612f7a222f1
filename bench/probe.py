"""The discrimination probe: can a dataset tell a safe learner from an unsafe one?

Two algorithms named by the probe's config (bench/assets/probe.yaml: BC-All, which clones every
episode, and BC-Safe, which clones only the episodes under the threshold) are trained briefly on
the dataset through the ordinary ``bench.interfaces.Algorithm`` seam and evaluated in the task's
simulator at each threshold (bench.evaluation, the runner's seeds). A threshold *separates* when
the first is unsafe there (normalized cost > 1) and the second safe (<= 1). A dataset that
separates at no threshold is flagged: on it, a method that ignores the cost scores as well as one
that respects it (or respecting it by imitation is not even possible), so its results cannot rank
safe RL methods.

The result goes into the dataset's JSON card (``<file>.json``, created if the file has none) under
``"probe"``, with the settings, the dataset's sha256 (so a stale probe is recognised) and the time
it took. Nothing here knows an algorithm by name: the names come from the config.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from bench.errors import BadInput

DEFAULT_CONFIG = Path(__file__).parent / "assets" / "probe.yaml"
#: Normalized cost above this is unsafe (DSRL: cost <= threshold is safe).
SAFE_LIMIT = 1.0


@dataclass(frozen=True)
class ProbeSettings:
    """What the probe trains and how long. Defaults: bench/assets/probe.yaml (see `load_settings`)."""

    #: Registry name of the learner that should be UNSAFE on a discriminating dataset.
    unsafe_algorithm: str
    #: Registry name of the learner that should be SAFE on it.
    safe_algorithm: str
    #: Gradient steps per model (the profile's train_steps that the algorithms read).
    train_steps: int
    #: Deterministic evaluation episodes per (model, threshold, seed).
    eval_episodes: int
    seeds: tuple[int, ...] = (0,)
    #: None = the task's thresholds.
    thresholds: tuple[float, ...] | None = None
    #: Roles ("unsafe", "safe") whose training does not read the threshold: trained once per seed and
    #: evaluated once; their normalized cost at each threshold is computed from the same episodes.
    threshold_free: tuple[str, ...] = ()
    device: str = "cpu"

    def validate(self) -> None:
        if self.train_steps < 1:
            raise BadInput(f"probe train_steps must be >= 1, got {self.train_steps}")
        if not 1 <= self.eval_episodes <= 1000:
            raise BadInput(f"probe eval_episodes must be in 1..1000, got {self.eval_episodes}")
        if not self.seeds or any(s < 0 for s in self.seeds):
            raise BadInput(f"probe seeds must be a non-empty list of non-negative integers, got {list(self.seeds)}")
        if self.thresholds is not None and (not self.thresholds or any(k < 0 for k in self.thresholds)):
            raise BadInput(f"probe thresholds must be non-negative, got {list(self.thresholds)}")
        if set(self.threshold_free) - {"unsafe", "safe"}:
            raise BadInput(f"probe threshold_free lists roles 'unsafe'/'safe', got {list(self.threshold_free)}")


def load_settings(path: Path | str | None = None, **overrides: Any) -> ProbeSettings:
    """Settings from a YAML file (default bench/assets/probe.yaml); ``overrides`` that are not None win."""
    import yaml

    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise BadInput(f"probe config {path} does not exist (see {DEFAULT_CONFIG} for the keys)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise BadInput(f"probe config {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise BadInput(f"probe config {path} must be a mapping of keys to values")
    names = {f.name for f in fields(ProbeSettings)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise BadInput(f"probe config {path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    missing = sorted(n for n in ("unsafe_algorithm", "safe_algorithm", "train_steps", "eval_episodes") if n not in raw)
    if missing:
        raise BadInput(f"probe config {path} lacks {', '.join(missing)}")
    try:
        settings = ProbeSettings(
            unsafe_algorithm=str(raw["unsafe_algorithm"]),
            safe_algorithm=str(raw["safe_algorithm"]),
            train_steps=int(raw["train_steps"]),
            eval_episodes=int(raw["eval_episodes"]),
            seeds=tuple(int(s) for s in raw.get("seeds", (0,))),
            thresholds=None if raw.get("thresholds") is None else tuple(float(k) for k in raw["thresholds"]),
            threshold_free=tuple(str(r) for r in (raw.get("threshold_free") or ())),
            device=str(raw.get("device", "cpu")),
        )
    except (TypeError, ValueError) as exc:
        raise BadInput(f"probe config {path}: bad value ({exc})") from None
    settings.validate()
    return settings


@dataclass
class ProbeResult:
    """The probe's verdict; ``to_card()`` is what the card stores under "probe"."""

    task: str
    dataset: str
    dataset_sha256: str
    settings: ProbeSettings
    #: One row per threshold: normalized reward/cost of both roles (mean over seeds), verdicts.
    rows: list[dict[str, Any]]
    seconds: float
    created_utc: str = ""
    per_seed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def separates_at(self) -> list[float]:
        return [row["threshold"] for row in self.rows if row["separates"]]

    @property
    def flagged(self) -> bool:
        return not self.separates_at

    @property
    def warning(self) -> str | None:
        return probe_warning(self.rows, self.settings)

    def to_card(self) -> dict[str, Any]:
        return {
            "dataset_sha256": self.dataset_sha256,
            "settings": {**asdict(self.settings), "seeds": list(self.settings.seeds),
                         "thresholds": None if self.settings.thresholds is None else list(self.settings.thresholds),
                         "threshold_free": list(self.settings.threshold_free)},
            "rule": f"separates at a threshold iff {self.settings.unsafe_algorithm} normalized cost > {SAFE_LIMIT:g} "
                    f"and {self.settings.safe_algorithm} normalized cost <= {SAFE_LIMIT:g} (means over seeds)",
            "thresholds": self.rows,
            "separates_at": self.separates_at,
            "flagged": self.flagged,
            "warning": self.warning,
            "per_seed": self.per_seed,
            "seconds": round(self.seconds, 1),
            "created_utc": self.created_utc,
        }


def probe_warning(rows: list[dict[str, Any]], settings: ProbeSettings | dict[str, Any]) -> str | None:
    """None if some threshold separates; else one sentence saying what the missing separation means."""
    if any(row["separates"] for row in rows):
        return None
    s = settings if isinstance(settings, dict) else asdict(settings)
    unsafe, safe = s["unsafe_algorithm"], s["safe_algorithm"]
    fmt = lambda ks: ", ".join(f"{k:g}" for k in ks)  # noqa: E731
    reasons = []
    all_safe = [row["threshold"] for row in rows if not row["unsafe_is_unsafe"]]
    safe_unsafe = [row["threshold"] for row in rows if not row["safe_is_safe"]]
    if all_safe:
        reasons.append(f"{unsafe} (cloning every episode) is already safe at threshold(s) {fmt(all_safe)}, so a method "
                       "that ignores the cost scores as well as one that respects it")
    if safe_unsafe:
        reasons.append(f"{safe} (cloning only the episodes under the threshold) is unsafe at threshold(s) "
                       f"{fmt(safe_unsafe)}, so safe behaviour is not learnable from it by imitation")
    return ("no separation: this dataset cannot tell a safe learner from an unsafe one: " + "; ".join(reasons)
            + ". Results on it do not rank safe RL methods; collect it again with a recipe whose costly "
            "episodes come from faster/riskier behaviour (docs/datasets.md, 'Discrimination probe').")


ProgressFn = Callable[[str], None]


def run_probe(dataset_path: Path | str, task: Any, settings: ProbeSettings | None = None,
              progress: ProgressFn | None = None) -> ProbeResult:
    """Train both roles at every (threshold, seed) on the dataset, evaluate them, return the verdict."""
    import numpy as np

    from bench.algorithms import get_algorithm
    from bench.data import load_dataset
    from bench.evaluation import EVAL_NUM_ENVS, evaluate_policy
    from bench.interfaces import TrainInputs, TrainSpec
    from bench.profiles import Profile
    from bench.training import train_many

    settings = settings or load_settings()
    settings.validate()
    if not settings.device.startswith("cuda"):
        import torch

        from bench.devices import tune_cpu_allocator

        # one core, as `presa-bench run` (its --threads default): osrl's BC ran 6 steps/s with torch's
        # default threads beside another busy process and 76 with one
        torch.set_num_threads(1)
        tune_cpu_allocator()
    started = time.perf_counter()
    path = Path(dataset_path)
    task.require_supported()
    dataset = load_dataset(path, task)
    thresholds = tuple(settings.thresholds) if settings.thresholds is not None else tuple(task.thresholds)
    # the budget as a profile: the algorithms read train_steps from it; no evaluation during training
    profile = Profile("probe", train_steps=settings.train_steps, warmup_fraction=0.3,
                      eval_episodes=settings.eval_episodes, eval_every=0, eval_episodes_during=0,
                      log_every=settings.train_steps, checkpoint_every=settings.train_steps, num_queries=0)
    roles = {"unsafe": settings.unsafe_algorithm, "safe": settings.safe_algorithm}
    classes = {role: get_algorithm(name) for role, name in roles.items()}
    for role, cls in classes.items():
        if cls.needs_feedback:
            raise BadInput(f"probe algorithm '{roles[role]}' learns from feedback; the probe trains only algorithms "
                           "that read the dataset itself (set unsafe_algorithm/safe_algorithm in the probe config)")
    scores: dict[tuple[str, float, int], dict[str, float]] = {}
    for role, cls in classes.items():
        shared = role in settings.threshold_free
        cells = [(k, s) for k in (thresholds[:1] if shared else thresholds) for s in settings.seeds]
        specs = [TrainSpec(task=task, threshold=float(k), seed=int(s), profile=profile, device=settings.device)
                 for k, s in cells]
        inputs = [TrainInputs(data=dataset.learner_view(), dataset=dataset if cls.uses_ground_truth else None)
                  for _ in cells]
        if progress is not None:
            progress(f"training {roles[role]}: {len(cells)} model(s) x {settings.train_steps} steps"
                     + (" (its training does not read the threshold)" if shared else ""))
        outputs = train_many(cls, specs, inputs)
        for (k, s), output in zip(cells, outputs):
            result = evaluate_policy(output.policy, task, float(k), episodes=settings.eval_episodes, seed=int(s),
                                     num_envs=EVAL_NUM_ENVS)
            for kk in (thresholds if shared else (k,)):
                nr, nc = task.normalize(result.returns, result.costs, float(kk))
                scores[(role, float(kk), int(s))] = {
                    "reward": float(result.returns.mean()), "cost": float(result.costs.mean()),
                    "normalized_reward": float(np.mean(nr)), "normalized_cost": float(np.mean(nc)),
                }
    rows, per_seed = [], []
    for k in thresholds:
        row: dict[str, Any] = {"threshold": float(k)}
        for role in roles:
            mine = [scores[(role, float(k), int(s))] for s in settings.seeds]
            row[role] = {
                "algorithm": roles[role],
                "normalized_reward": round(float(np.mean([m["normalized_reward"] for m in mine])), 4),
                "normalized_cost": round(float(np.mean([m["normalized_cost"] for m in mine])), 4),
                "reward": round(float(np.mean([m["reward"] for m in mine])), 2),
                "cost": round(float(np.mean([m["cost"] for m in mine])), 2),
            }
            for s, m in zip(settings.seeds, mine):
                per_seed.append({"threshold": float(k), "seed": int(s), "role": role, "algorithm": roles[role],
                                 "normalized_reward": round(m["normalized_reward"], 4),
                                 "normalized_cost": round(m["normalized_cost"], 4)})
        row["unsafe_is_unsafe"] = bool(row["unsafe"]["normalized_cost"] > SAFE_LIMIT)
        row["safe_is_safe"] = bool(row["safe"]["normalized_cost"] <= SAFE_LIMIT)
        row["separates"] = row["unsafe_is_unsafe"] and row["safe_is_safe"]
        row["reward_gap"] = round(row["unsafe"]["normalized_reward"] - row["safe"]["normalized_reward"], 4)
        rows.append(row)
    return ProbeResult(
        task=task.name, dataset=str(path), dataset_sha256=file_sha256(path), settings=settings, rows=rows,
        seconds=time.perf_counter() - started, created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        per_seed=per_seed,
    )


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_path(dataset_path: Path | str) -> Path:
    return Path(dataset_path).with_suffix(".json")


def read_card(dataset_path: Path | str) -> dict[str, Any] | None:
    path = card_path(dataset_path)
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise BadInput(f"dataset card {path} is not valid JSON: fix or delete it") from None
    return card if isinstance(card, dict) else None


def write_probe(dataset_path: Path | str, result: ProbeResult, command: str = "") -> Path:
    """Store the probe in the dataset's card (every other key kept); a file without a card gets one."""
    from bench.io import atomic_write_bytes

    path = card_path(dataset_path)
    card = read_card(dataset_path) or {"task": result.task, "file": Path(dataset_path).name,
                                       "sha256": result.dataset_sha256}
    card["probe"] = {**result.to_card(), **({"command": command} if command else {})}
    atomic_write_bytes(path, (json.dumps(card, indent=2) + "\n").encode())
    return path


def stored_probe(dataset_path: Path | str) -> tuple[dict[str, Any] | None, bool]:
    """(the card's probe or None, whether it was made on this very file)."""
    card = read_card(dataset_path)
    probe = (card or {}).get("probe")
    if not probe:
        return None, False
    return probe, probe.get("dataset_sha256") == file_sha256(dataset_path)


def probe_table(probe: dict[str, Any], title: str = "discrimination probe"):  # type: ignore[no-untyped-def]
    """A rich table of a stored (card) probe: one row per threshold."""
    from rich.table import Table

    s = probe["settings"]
    seeds = ", ".join(str(x) for x in s["seeds"])
    table = Table(title=f"{title} ({s['train_steps']} steps, {s['eval_episodes']} episodes, seeds {seeds})")
    table.add_column("threshold", justify="right")
    table.add_column(f"{s['unsafe_algorithm']} reward / cost", justify="right")
    table.add_column(f"{s['safe_algorithm']} reward / cost", justify="right")
    table.add_column(f"{s['unsafe_algorithm']} unsafe", justify="center")
    table.add_column(f"{s['safe_algorithm']} safe", justify="center")
    table.add_column("separates", justify="center")
    yes = lambda b: "yes" if b else "[red]no[/red]"  # noqa: E731
    for row in probe["thresholds"]:
        u, v = row["unsafe"], row["safe"]
        table.add_row(f"{row['threshold']:g}", f"{u['normalized_reward']:.2f} / {u['normalized_cost']:.2f}",
                      f"{v['normalized_reward']:.2f} / {v['normalized_cost']:.2f}", yes(row["unsafe_is_unsafe"]),
                      yes(row["safe_is_safe"]), yes(row["separates"]))
    return table


def print_probe(console: Any, probe: dict[str, Any], fresh: bool = True) -> None:
    console.print(probe_table(probe))
    if not fresh:
        console.print("[yellow]warning:[/yellow] this probe was made on a different file (sha256 differs): rerun "
                      "`presa-bench data probe` on this one")
    if probe.get("warning"):
        console.print(f"[yellow]warning:[/yellow] {probe['warning']}")
    else:
        console.print(f"separates at threshold(s) {', '.join(f'{k:g}' for k in probe['separates_at'])}")

