"""The algorithms runnable by `presa-bench run --algo SPEC`, and how a SPEC finds its class.

A SPEC is one of
- a registry name ("presa", "bc-safe"): the methods shipped in presa/ and baselines/;
- a name an installed package declares in the entry-point group ``presa_bench.algorithms``
  (``[project.entry-points."presa_bench.algorithms"] my-method = "my_pkg.module:MyMethod"``);
- ``package.module:Class`` (importable from sys.path);
- ``path/to/file.py:Class`` (a file anywhere; loaded by path, no package needed).

Entries are import paths, resolved lazily so that listing names imports no torch. Every entry
implements bench.interfaces.Algorithm; bench/ never branches on the name. A user's class names its
cells by its declared ``name`` (else its lower-cased class name), so `report` shows the same
readable name whichever SPEC ran it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path

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

#: The entry-point group through which installed packages add algorithms (name -> "module:Class").
ENTRY_POINT_GROUP = "presa_bench.algorithms"

#: A cell's algorithm name becomes part of its file names (bench.results.CellKey.cell_id).
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


def installed_algorithms() -> dict[str, str]:
    """Entry points of the ``presa_bench.algorithms`` group: lower-cased name -> "module:Class"."""
    from importlib.metadata import entry_points

    return {ep.name.strip().lower(): ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_algorithms() -> dict[str, str]:
    """Every algorithm reachable by name: installed entry points, then the registry (which wins)."""
    return {**installed_algorithms(), **REGISTRY}


def algorithm_names() -> list[str]:
    return sorted(known_algorithms())


def is_path_spec(spec: str) -> bool:
    """True for ``module:Class`` and ``file.py:Class`` specs (not a registry or entry-point name)."""
    return ":" in spec


def resolve_algorithm(spec: str) -> tuple[str, str]:
    """(cell name, loadable "module:Class" or "/abs/file.py:Class") of an ``--algo`` SPEC.

    Raises BadInput for an unknown name, a missing file or module, a missing class, a class that is
    not a bench.interfaces.Algorithm, or a declared name that is not usable or shadows another method.
    """
    text = spec.strip()
    key = text.lower()
    known = known_algorithms()
    if key in known:
        return key, known[key]
    if not is_path_spec(text):
        import difflib

        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise BadInput(
            f"unknown algorithm '{spec}'{hint} (choose from {', '.join(sorted(known))}, or give your own as "
            "path/to/file.py:Class or package.module:Class; `presa-bench algos` lists them)"
        )
    target, _, cls_name = text.rpartition(":")
    if target.endswith(".py"):
        file = Path(target).expanduser().resolve()
        if not file.is_file():
            raise BadInput(f"--algo {spec}: file {target} does not exist")
        target = str(file)
    path = f"{target}:{cls_name}"
    cls = load_class(path)
    name = cell_name(text, cls)
    if not _NAME.fullmatch(name):
        raise BadInput(
            f"--algo {spec}: {cls.__name__}.name '{name}' is not usable in file names; use lower-case letters, "
            "digits, '-', '_' or '.'"
        )
    if name in known and known[name] != path:
        raise BadInput(
            f"--algo {spec}: {cls.__name__} is named '{name}', which is {known[name]}; give your class its own "
            "`name` so that its results are not mixed with that method's"
        )
    return name, path


def cell_name(spec: str, cls: type[Algorithm]) -> str:
    """The name a spec's cells are stored under: the registry or entry-point name, or for a
    ``module:Class`` / ``file.py:Class`` spec the class's declared name."""
    return declared_name(cls) if is_path_spec(spec) else spec.strip().lower()


def declared_name(cls: type[Algorithm]) -> str:
    """The class's ``name`` class attribute, else its class name, lower-cased."""
    own = getattr(cls, "name", None)
    return (own if isinstance(own, str) and own.strip() else cls.__name__).strip().lower()


def load_class(path: str) -> type[Algorithm]:
    """The Algorithm class of a "module:Class" or "/abs/file.py:Class" path (BadInput if it is not one)."""
    target, _, cls_name = path.rpartition(":")
    module = _load_file(Path(target)) if target.endswith(".py") else _import(target, path)
    cls = getattr(module, cls_name, None)
    if cls is None:
        found = sorted(k for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, Algorithm) and v is not Algorithm)
        have = f"; its Algorithm classes: {', '.join(found)}" if found else "; it defines no Algorithm subclass"
        raise BadInput(f"--algo {path}: {target} has no class {cls_name}{have}")
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise BadInput(f"--algo {path}: {cls_name} is not a subclass of bench.interfaces.Algorithm (see docs/extending.md)")
    return cls


def _import(module_name: str, path: str):  # type: ignore[no-untyped-def]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):  # the module itself, not one it imports
            raise BadInput(f"--algo {path}: no module named {module_name} (is it installed or on PYTHONPATH?)") from None
        raise


def _load_file(file: Path):  # type: ignore[no-untyped-def]
    """Import a Python file by path, once per process, under a module name derived from its path (so that
    dataclasses and pickling find it in sys.modules)."""
    module_name = f"presa_bench_user_{file.stem}_{hashlib.sha256(str(file).encode()).hexdigest()[:8]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    if not file.is_file():
        raise BadInput(f"--algo: file {file} does not exist")
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise BadInput(f"--algo: {file} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[module_name]
        raise BadInput(f"--algo: {file} line {exc.lineno}: {exc.msg}") from None
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def get_algorithm(name: str) -> type[Algorithm]:
    """The class of an ``--algo`` SPEC (registry name, entry point, module:Class or file.py:Class)."""
    return load_class(resolve_algorithm(name)[1])
