"""What a person sees while a cell trains: a time estimate before it starts, then one line per log
interval (or a progress bar on a terminal), and optionally TensorBoard curves, written as the run goes.

Everything here only reads what bench.training's loop hands to ``TrainSpec.log`` after a log interval
or an online evaluation; nothing touches an RNG or the computation, so a run's numbers are the same
with any of these sinks or none.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

from bench.budget import dotted
from bench.errors import BadInput

SPEEDS_FILE = Path(__file__).resolve().parents[1] / "configs" / "speeds.yaml"
#: `--log` sinks.
SINKS = ("tensorboard",)
#: Metrics shown on a plain log line (the first ones the learner logs).
SHOWN_METRICS = 4


def duration(seconds: float) -> str:
    """1h02m, 13m48s, 36s."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass(frozen=True)
class Estimate:
    steps: int
    steps_per_second: float | None
    source: str

    def line(self, name: str) -> str:
        if not self.steps_per_second:
            return f"estimate: {self.steps:,} steps of {name}; no measured speed of {name} here yet ({self.source})"
        seconds = self.steps / self.steps_per_second
        return (f"estimate: {self.steps:,} steps of {name} at ~{self.steps_per_second:.3g} steps/s = about "
                f"{duration(seconds)} of training, plus evaluation ({self.source})")


def estimate(config: dict[str, Any], profile_steps: int, results_dir: Path | str, speeds_file: Path = SPEEDS_FILE) -> Estimate:
    """The planned steps of a resolved cell (bench.runner.ResolvedCell.config) and its expected speed:
    the median steps/s of the store's runs of the method on the same device, else configs/speeds.yaml
    (one CPU thread) scaled by the cell's batch."""
    import yaml

    from bench.sweep import load_budgets

    name, device, algo_config = config["algorithm"], str(config["device"]), config.get("algorithm_config") or {}
    budgets = load_budgets()
    entry = (budgets.get("algorithms") or {}).get(name) or {}
    steps = dotted(algo_config, str(entry.get("steps_key") or "")) or profile_steps
    batch = dotted(algo_config, str(entry.get("batch_key") or ""))
    on_cpu = not device.startswith("cuda")
    cap = dotted(algo_config, str(budgets.get("cap_key") or ""))
    if on_cpu and isinstance(cap, int) and 0 < cap < steps:
        steps = cap
    cpu_batch = algo_config.get("cpu_batch_size") if isinstance(algo_config, dict) else None
    if on_cpu and isinstance(batch, int) and isinstance(cpu_batch, int) and cpu_batch < batch:
        batch = cpu_batch
    stored = _stored_speeds(results_dir, name, device)
    if stored:
        median = sorted(stored)[len(stored) // 2]
        return Estimate(int(steps), median, f"median of {len(stored)} stored run(s) of {name} on {device} in {results_dir}")
    if on_cpu and speeds_file.is_file():
        table = (yaml.safe_load(speeds_file.read_text()) or {}).get("cpu") or {}
        row = table.get(name)
        if row:
            sps, measured_batch = float(row["steps_per_second"]), row.get("batch")
            note = f"{speeds_file.name}, one CPU thread"
            if isinstance(batch, int) and measured_batch and batch != measured_batch:
                sps *= float(measured_batch) / batch
                note += f", scaled from batch {measured_batch} to {batch}"
            return Estimate(int(steps), sps, note)
    return Estimate(int(steps), None, "the first log line measures it")


def sweep_estimate(cells: list[Any], results_dir: Path | str) -> str:
    """One line for the cells a sweep is about to train (bench.runner.ResolvedCell): their summed
    training time where a speed is measured, and the methods without one."""
    seconds, unknown = 0.0, set()
    for cell in cells:
        planned = estimate(cell.config, cell.profile.train_steps, results_dir)
        if planned.steps_per_second:
            seconds += planned.steps / planned.steps_per_second
        else:
            unknown.add(cell.key.algorithm)
    line = f"estimate: {len(cells)} cell(s) to train, about {duration(seconds)} of training one after another (plus evaluation)"
    if unknown:
        line += f"; no measured speed yet for {', '.join(sorted(unknown))} (not counted)"
    return line


def _stored_speeds(results_dir: Path | str, name: str, device: str) -> list[float]:
    from bench import results as store

    if not Path(results_dir).is_dir():
        return []
    meta = store.load_meta(results_dir, columns=["algorithm", "device", "steps_per_second"])
    if meta.empty:
        return []
    rows = meta[(meta["algorithm"] == name) & (meta["device"] == device)]["steps_per_second"].dropna()
    return [float(v) for v in rows if v > 0]


class TensorBoardSink:
    """Every curve the store keeps (train metrics and online evaluations), as TensorBoard scalars under
    ``<directory>``, flushed at each evaluation and when closed (works offline: plain event files)."""

    def __init__(self, directory: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.directory = directory
        self.writer = SummaryWriter(log_dir=str(directory))

    def __call__(self, step: int, metrics: dict[str, Any]) -> None:
        source = str(metrics.get("source", "train"))
        for key, value in metrics.items():
            if key not in ("step", "source") and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{source}/{key}", float(value), step)
        if source == "eval":
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def check_sink(kind: str | None) -> None:
    """BadInput for an unknown `--log` sink (before any work starts)."""
    if kind is not None and kind not in SINKS:
        raise BadInput(f"--log {kind}: unknown sink; choose one of {', '.join(SINKS)} (or leave --log out)")


def open_sink(kind: str | None, results_dir: Path | str, cell_id: str) -> TensorBoardSink | None:
    """The `--log` sink for one cell (None: no sink); BadInput for an unknown kind."""
    check_sink(kind)
    if kind is None:
        return None
    return TensorBoardSink(Path(results_dir) / "tensorboard" / cell_id)


class PlainLog:
    """One line per log interval for logs read later (stdout/stderr not a terminal): step/total,
    steps/s, the first metrics, elapsed time and ETA; one line per online evaluation."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.total, self.stream, self.clock = label, int(total), stream, clock
        self.started = clock()

    def __call__(self, step: int, metrics: dict[str, Any]) -> None:
        stream = self.stream or sys.stderr
        elapsed = self.clock() - self.started
        if metrics.get("source") == "eval":
            shown = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("normalized_reward", "normalized_cost") if k in metrics)
            print(f"{self.label} eval at step {step}: {shown}", file=stream, flush=True)
            return
        sps = float(metrics.get("steps_per_second") or 0.0)
        eta = duration((self.total - step) / sps) if sps > 0 else "?"
        numbers = [(k, v) for k, v in metrics.items()
                   if k not in ("step", "source", "steps_per_second") and isinstance(v, (int, float))]
        shown = "  ".join(f"{k} {v:.3g}" for k, v in numbers[:SHOWN_METRICS])
        percent = 100.0 * step / self.total if self.total else 100.0
        print(f"{self.label} step {step}/{self.total} ({percent:.0f}%)  {sps:.3g} steps/s  {shown}  "
              f"elapsed {duration(elapsed)}  ETA {eta}", file=stream, flush=True)


def fan_out(*sinks: Callable[[int, dict[str, Any]], None] | None) -> Callable[[int, dict[str, Any]], None]:
    """One TrainSpec.log callback feeding every given sink (None entries skipped)."""
    live = [s for s in sinks if s is not None]

    def log(step: int, metrics: dict[str, Any]) -> None:
        for sink in live:
            sink(step, metrics)

    return log
