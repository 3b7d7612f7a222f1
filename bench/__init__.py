"""presa-bench: the benchmark machinery (tasks, data, feedback, evaluation, results, sweeps, CLI)."""

from bench import compat as _compat

_compat.apply()

__version__ = "0.1.0"
