"""The one `--set KEY=VALUE` coercion rule, for every algorithm's config and the feedback settings.

`presa-bench run --set` values arrive parsed as YAML (bench.runner.parse_overrides): ``64,64`` is
the string "64,64", ``[64,64]`` a list, ``3e-4`` a float. `apply_overrides` converts each value to
the type its dataclass field DECLARES (not the type of its default, which may be None):

- bool: true/false, 1/0 (a bool, the integers 0/1 or those strings, any case);
- int: a whole number (``512``, ``"512"``, ``1e3``); ``1.5`` and booleans are refused;
- float: any number (``3e-4``, ``"0.1"``, ``2``);
- str: a string or a number (``compile=off``);
- list[T] / tuple[T, ...]: a YAML list ``[64,64]``, a comma string ``64,64`` (brackets optional) or
  a single value ``64``; each item converted to T; tuple[T1, T2] needs exactly two items;
- X | None: ``none``/``null`` (any case) or a YAML null gives None, anything else is an X;
- dict / Any: passed as is.

Then the value must be in range (`check_range`, the same for every config): every number finite; a
learning rate (``lr``, ``*_lr``, ``learning_rate``) > 0 (>= 0 where its default is 0); a count
(an int named ``*batch_size``, ``*steps``, ``*sizes``, ``num_*``, ``*_len``, ``*_dim``,
``*layers``, ``*heads``, ``*bins``; a list of them item by item) >= 1, or its field's own default
(a sentinel such as 0 = "the profile's"), and >= 0 for a warm-up length.

Every refusal is one BadInput of one form: ``bad --set KEY=VALUE for OWNER: <why>``, where why is
"expected <form>" for a bad value and "unknown setting; known settings: ..." for an unknown key.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from bench.errors import BadInput

_TRUE = ("true", "1")
_FALSE = ("false", "0")
_NONE = ("none", "null")


class _Refused(ValueError):
    pass


def bad_setting(owner: str, key: str, value: Any, why: str, error: type[BadInput] = BadInput) -> BadInput:
    """The one message form of a refused override."""
    shown = value if isinstance(value, str) else repr(value)
    return error(f"bad --set {key}={shown} for {owner}: {why}")


def field_types(cls: type) -> dict[str, Any]:
    """Declared type of each field of dataclass ``cls`` (the default's type where a hint does not resolve)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: fall back per field below
        hints = {}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in hints:
            out[f.name] = hints[f.name]
        elif f.default is not dataclasses.MISSING and f.default is not None:
            out[f.name] = type(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = type(f.default_factory())  # type: ignore[misc]
        else:
            out[f.name] = Any
    return out


def describe(hint: Any) -> str:
    """The expected form of a value of type ``hint``, for messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _is_optional(hint):
        return f"{describe(_strip_none(hint))} or none"
    if hint is bool:
        return "true or false (or 1/0)"
    if hint is int:
        return "a whole number (e.g. 512)"
    if hint is float:
        return "a number (e.g. 3e-4)"
    if hint is str:
        return "a string"
    if origin in (list, tuple):
        items = [a for a in args if a is not Ellipsis] or [Any]
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"{len(args)} comma-separated values ({', '.join(describe(a) for a in args)}; e.g. 0.9,0.999)"
        item = items[0]
        example = "64,64" if item is int else "0.1,0.01" if item is float else "a,b"
        noun = {int: "whole numbers", float: "numbers", str: "strings"}.get(item, "values")
        return f"a list of {noun}: {example} or [{example}]"
    if origin is dict or hint is dict:
        return "a mapping"
    return "a value"


def coerce(value: Any, hint: Any) -> Any:
    """``value`` converted to type ``hint`` by the rule above; raises ValueError when it is not one."""
    if _is_optional(hint):
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            return None
        return coerce(value, _strip_none(hint))
    if value is None:
        raise _Refused("needs a value")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, (str, int)) else None
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise _Refused(value)
    if hint is int:
        if isinstance(value, bool):
            raise _Refused(value)
        number = float(value.strip() if isinstance(value, str) else value)
        if not math.isfinite(number) or not number.is_integer():
            raise _Refused(value)
        return int(number)
    if hint is float:
        if isinstance(value, bool):
            raise _Refused(value)
        return float(value.strip() if isinstance(value, str) else value)
    if hint is str:
        if isinstance(value, (list, tuple, dict, bool)):
            raise _Refused(value)
        return str(value)
    if origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            items = list(value)
        elif isinstance(value, str):
            items = [v.strip() for v in value.strip().strip("[]()").split(",") if v.strip()]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            items = [value]
        else:
            raise _Refused(value)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise _Refused(value)
            return tuple(coerce(v, a) for v, a in zip(items, args))
        item = args[0] if args else Any
        converted = [coerce(v, item) for v in items]
        return tuple(converted) if origin is tuple else converted
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise _Refused(value)
        return value
    return value  # Any or a type this rule does not know: as given


def apply_overrides(
    config: Any,
    overrides: dict[str, Any],
    owner: str,
    skip_prefixes: tuple[str, ...] = (),
    *,
    key_prefix: str = "",
    error: type[BadInput] = BadInput,
) -> Any:
    """``config`` (a dataclass instance) with ``overrides`` applied by the one coercion rule.

    A mutable dataclass is changed in place and returned; a frozen one is copied (dataclasses.replace).
    Keys starting with one of ``skip_prefixes`` are left for someone else. ``owner`` names whose
    settings these are (the algorithm) and ``key_prefix`` is shown before each key in messages
    (``feedback.``); ``error`` is the BadInput subclass raised.
    """
    types = field_types(type(config))
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if any(key.startswith(p) for p in skip_prefixes):
            continue
        if key not in types:
            raise bad_setting(owner, key_prefix + key, value, f"unknown setting; known settings: {', '.join(sorted(types))}", error)
        try:
            changes[key] = coerce(value, types[key])
        except (TypeError, ValueError):
            raise bad_setting(owner, key_prefix + key, value, f"expected {describe(types[key])}", error) from None
        why = check_range(key, changes[key], _default(type(config), key))
        if why:
            raise bad_setting(owner, key_prefix + key, value, f"expected {why}", error)
    if not changes:
        return config
    if type(config).__dataclass_params__.frozen:  # type: ignore[attr-defined]
        return dataclasses.replace(config, **changes)
    for key, value in changes.items():
        setattr(config, key, value)
    return config


_COUNT_SUFFIXES = ("batch_size", "steps", "sizes", "_len", "_dim", "layers", "heads", "bins")


def _is_learning_rate(key: str) -> bool:
    return key in ("lr", "learning_rate") or key.endswith("_lr")


def _is_count(key: str) -> bool:
    return key.startswith("num_") or key.endswith(_COUNT_SUFFIXES)


def check_range(key: str, value: Any, default: Any = None) -> str | None:
    """Why ``value`` (already of its field's type) is out of range for setting ``key``, or None.
    The one range rule of every config (see the module docstring); ``default`` is the field's."""
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        if not math.isfinite(item):
            return "a finite number"
        if _is_learning_rate(key) and isinstance(item, float):
            if default == 0 and item < 0:
                return "a learning rate >= 0"
            if default != 0 and item <= 0:
                return "a learning rate > 0 (e.g. 3e-4)"
        if _is_count(key) and isinstance(item, int) and value != default:
            least = 0 if "warmup" in key else 1
            if item < least:
                return f"a whole number >= {least}"
    return None


def _default(cls: type, key: str) -> Any:
    """The declared default of field ``key`` of dataclass ``cls`` (None without one)."""
    for f in dataclasses.fields(cls):
        if f.name == key:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                return f.default_factory()  # type: ignore[misc]
    return None


def _is_optional(hint: Any) -> bool:
    return type(None) in typing.get_args(hint) and typing.get_origin(hint) in (typing.Union, _UnionType)


def _strip_none(hint: Any) -> Any:
    rest = [a for a in typing.get_args(hint) if a is not type(None)]
    return rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # type: ignore[return-value]


_UnionType = type(int | None)
