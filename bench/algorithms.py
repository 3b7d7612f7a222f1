"""Registry of the algorithms runnable by `presa-bench run --algo NAME`.

Entries are import paths, resolved lazily so that listing names imports no torch. Every entry
implements bench.interfaces.Algorithm; bench/ never branches on the name.
"""

from __future__ import annotations

import importlib

from bench.errors import BadInput
from bench.interfaces import Algorithm

#: name -> "module:Class". PreSa lives in presa/, every baseline in baselines/.
REGISTRY: dict[str, str] = {
    "presa": "presa.algorithm:PreSa",
    "cpl": "presa.algorithm:CPL",
    "bc-all": "baselines.bc:BCAll",
    "bc-safe": "baselines.bc:BCSafe",
    "cdt": "baselines.cdt:CDT",
    "bcq-lag": "baselines.constrained:BCQLag",
    "cpq": "baselines.constrained:CPQ",
    "coptidice": "baselines.constrained:COptiDICE",
    "safe-rlhf": "baselines.safe_rlhf:SafeRLHF",
}


def algorithm_names() -> list[str]:
    return sorted(REGISTRY)


def get_algorithm(name: str) -> type[Algorithm]:
    key = name.strip().lower()
    if key not in REGISTRY:
        import difflib

        close = difflib.get_close_matches(key, REGISTRY, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise BadInput(f"unknown algorithm '{name}'{hint} (choose from {', '.join(algorithm_names())})")
    module_name, cls_name = REGISTRY[key].split(":")
    return getattr(importlib.import_module(module_name), cls_name)
