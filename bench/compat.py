"""Runtime compatibility patches for the offline safe-RL stack on Python 3.11.

This is the ONE place where presa-bench adapts third-party packages. It is imported first by every
entry point (``bench/__init__.py`` applies it), is idempotent, and imports nothing heavy.

Why each patch exists (measured with the pinned set in requirements/lock.txt, see docs/install.md):

1. safety-gymnasium 1.0.0 declares dataclass fields with ``numpy.ndarray`` defaults; Python 3.11's
   dataclasses reject them ("mutable default <class 'numpy.ndarray'> for field color is not
   allowed"). We turn such a default into a ``default_factory`` that returns a copy.
2. dsrl 0.1.0 imports ``safety_gymnasium.tasks.safety_velocity``, renamed ``safe_velocity`` in
   safety-gymnasium 1.0.0 (trajectories are identical): an import alias maps the old name.
3. osrl-lib and fast-safe-rl import ``wandb`` at import time; presa-bench never logs to wandb, so
   when wandb is not installed a stub module stands in (OSRL's DummyLogger never calls it).
4. ``DSRL_SUPPRESS_IMPORT_ERROR=1`` hides dsrl's warning about the missing MetaDrive ``gym``.
5. bullet-safety-gym silences pybullet by redirecting C-level stdout/stderr through
   ``stream.fileno()`` and a libc symbol named after ``stream.name``; both fail when Python's
   streams are replaced (pytest's capture, typer's CliRunner, a notebook). Its ``RedirectStream``
   is made robust: it flushes all C streams and skips the redirect when a stream has no fd.
6. gymnasium-robotics prints a notice about its Adroit environments (which presa-bench never
   uses) to stderr at every import of a simulator; it is removed from farama_notifications.
7. safety-gymnasium imports pyGLFW, whose import starts a Python subprocess per candidate library
   to read its version. A sweep worker killed mid-import (Ctrl-C, SIGTERM) leaves that subprocess
   to write into a closed pipe, and its BrokenPipeError traceback lands in the sweep's stderr
   (seen in CI). presa-bench never opens a GLFW window, so ``PYGLFW_LIBRARY`` is set, unless the
   user set it, to the library pyGLFW would pick from its own wheel (x11, or wayland as pyGLFW
   decides): it is loaded directly and nothing is started.
"""

from __future__ import annotations

import dataclasses
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types

_APPLIED = False
_OLD_VELOCITY = "safety_gymnasium.tasks.safety_velocity"
_NEW_VELOCITY = "safety_gymnasium.tasks.safe_velocity"


def _is_ndarray(value: object) -> bool:
    cls = type(value)
    return cls.__name__ == "ndarray" and cls.__module__ == "numpy"


def _patch_dataclass_ndarray_defaults() -> None:
    original = dataclasses._get_field  # type: ignore[attr-defined]
    if getattr(original, "_presa_patched", False):
        return

    def _get_field(cls, a_name, a_type, *args, **kwargs):  # type: ignore[no-untyped-def]
        default = cls.__dict__.get(a_name, dataclasses.MISSING)
        if isinstance(default, dataclasses.Field) and _is_ndarray(default.default):
            value = default.default
            default.default = dataclasses.MISSING
            default.default_factory = value.copy
        elif _is_ndarray(default):
            setattr(cls, a_name, dataclasses.field(default_factory=default.copy))
        return original(cls, a_name, a_type, *args, **kwargs)

    _get_field._presa_patched = True  # type: ignore[attr-defined]
    dataclasses._get_field = _get_field  # type: ignore[attr-defined]


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        module = importlib.import_module(self.target)
        sys.modules[spec.name] = module
        return module

    def exec_module(self, module) -> None:  # type: ignore[no-untyped-def]
        return None


class _VelocityAliasFinder(importlib.abc.MetaPathFinder):
    """Resolve ``safety_gymnasium.tasks.safety_velocity[.x]`` to ``...safe_velocity[.x]``."""

    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if fullname != _OLD_VELOCITY and not fullname.startswith(_OLD_VELOCITY + "."):
            return None
        target_name = _NEW_VELOCITY + fullname[len(_OLD_VELOCITY):]
        is_package = fullname == _OLD_VELOCITY
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(target_name), is_package=is_package)


_BULLET_BUILDER = "bullet_safety_gym.envs.builder"


def _robust_redirect_stream(cls: type) -> None:
    """Replace RedirectStream's methods by ones that work with any sys.stdout/sys.stderr."""
    import ctypes

    def _flush_c_stream(stream) -> None:  # type: ignore[no-untyped-def]
        ctypes.CDLL(None).fflush(None)

    def __enter__(self):  # type: ignore[no-untyped-def]
        self.fd = None
        try:
            target = self.stream.fileno()
            self.stream.flush()
        except (AttributeError, OSError, ValueError):
            return self
        self.fd = open(self.file, "w+")
        self.dup_stream = os.dup(target)
        self.target = target
        os.dup2(self.fd.fileno(), target)
        return self

    def __exit__(self, *exc):  # type: ignore[no-untyped-def]
        if self.fd is None:
            return None
        _flush_c_stream(self.stream)
        os.dup2(self.dup_stream, self.target)
        os.close(self.dup_stream)
        self.fd.close()
        return None

    cls._flush_c_stream = staticmethod(_flush_c_stream)
    cls.__enter__ = __enter__
    cls.__exit__ = __exit__


class _BulletBuilderLoader(importlib.abc.Loader):
    def __init__(self, wrapped: importlib.abc.Loader) -> None:
        self.wrapped = wrapped

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        return self.wrapped.create_module(spec)

    def exec_module(self, module) -> None:  # type: ignore[no-untyped-def]
        # The module redirects sys.stderr at import time: give it the real stream for that moment.
        saved = sys.stderr
        sys.stderr = sys.__stderr__ or saved
        try:
            self.wrapped.exec_module(module)
        finally:
            sys.stderr = saved
        _robust_redirect_stream(module.RedirectStream)


class _BulletBuilderFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if fullname != _BULLET_BUILDER:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _BulletBuilderLoader(spec.loader)
        return spec


def _wandb_stub() -> types.ModuleType:
    stub = types.ModuleType("wandb")
    stub.__doc__ = "presa-bench stub: wandb is not installed and never used."
    stub.run = None

    def _noop(*args, **kwargs):  # type: ignore[no-untyped-def]
        return None

    for name in ("init", "log", "finish", "watch", "save", "config", "define_metric"):
        setattr(stub, name, _noop)
    return stub


def _glfw_library() -> str | None:
    """The library pyGLFW's wheel bundles for this session type (its own rule), or None."""
    if not sys.platform.startswith("linux"):
        return None
    spec = importlib.util.find_spec("glfw")
    if spec is None or not spec.submodule_search_locations:
        return None
    variant = os.environ.get("PYGLFW_LIBRARY_VARIANT", "").lower()
    if variant not in ("wayland", "x11"):
        variant = "wayland" if os.environ.get("XDG_SESSION_TYPE") == "wayland" else "x11"
    library = os.path.join(list(spec.submodule_search_locations)[0], variant, "libglfw.so")
    return library if os.path.isfile(library) else None


def apply() -> None:
    """Apply every patch once. Safe to call many times."""
    global _APPLIED
    if _APPLIED:
        return
    os.environ.setdefault("DSRL_SUPPRESS_IMPORT_ERROR", "1")
    if "PYGLFW_LIBRARY" not in os.environ and "glfw" not in sys.modules:
        library = _glfw_library()
        if library is not None:
            os.environ["PYGLFW_LIBRARY"] = library
    _patch_dataclass_ndarray_defaults()
    if not any(isinstance(f, _VelocityAliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _VelocityAliasFinder())
    if not any(isinstance(f, _BulletBuilderFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _BulletBuilderFinder())
    try:
        import farama_notifications

        farama_notifications.notifications.pop("gymnasium_robotics", None)
    except ImportError:
        pass
    if "wandb" not in sys.modules and importlib.util.find_spec("wandb") is None:
        sys.modules["wandb"] = _wandb_stub()
    _APPLIED = True
