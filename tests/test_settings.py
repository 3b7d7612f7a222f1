"""The one `--set` coercion rule (bench.settings), for every registered algorithm and the feedback settings."""

from __future__ import annotations

import dataclasses
import re
import typing

import pytest

import bench  # noqa: F401  (compat patches first)
from bench.algorithms import REGISTRY, get_algorithm
from bench.errors import BadInput, FeedbackError
from bench.feedback import FeedbackSettings
from bench.interfaces import TrainSpec
from bench.profiles import get_profile
from bench.runner import parse_overrides
from bench.settings import apply_overrides, field_types
from bench.tasks import get_task

BALLCIRCLE = get_task("BallCircle")


def config_for(name: str, strings: list[str]):  # type: ignore[no-untyped-def]
    """The algorithm's config for ``--set`` strings, parsed as `presa-bench run` parses them."""
    spec = TrainSpec(task=BALLCIRCLE, threshold=20.0, seed=0, profile=get_profile("smoke"), overrides=dict(parse_overrides(strings)))
    return get_algorithm(name).config_for(spec)


def fields_of(name: str, want) -> list[str]:  # type: ignore[no-untyped-def]
    """Fields of the algorithm's config whose declared type satisfies ``want``."""
    config = config_for(name, [])
    return [key for key, hint in field_types(type(config)).items() if want(hint)]


def _int_list(hint) -> bool:  # type: ignore[no-untyped-def]
    args = typing.get_args(hint)
    return typing.get_origin(hint) in (list, tuple) and bool(args) and args[0] is int and (len(args) == 1 or args[1] is Ellipsis)


ALGORITHMS = sorted(REGISTRY)


#: The algorithms with a list-of-integers setting (CDT has none); the list itself is checked below.
WITH_LISTS = [name for name in ALGORITHMS if fields_of(name, _int_list)]


def test_every_algorithm_but_cdt_has_a_list_setting():
    assert sorted(set(ALGORITHMS) - set(WITH_LISTS)) == ["cdt"]


@pytest.mark.parametrize("name", WITH_LISTS)
def test_list_settings_take_every_form_the_same_way(name):
    lists = fields_of(name, _int_list)
    for key in lists:
        for text in (f"{key}=64,64", f"{key}=[64,64]", f"{key}=[64, 64]", f"{key}=(64,64)", f"{key}=64.0,64"):
            assert list(getattr(config_for(name, [text]), key)) == [64, 64], (name, text)
        assert list(getattr(config_for(name, [f"{key}=32"]), key)) == [32], (name, key)


def test_presa_hidden_sizes_and_bc_a_hidden_sizes_read_alike():
    for text in ("64,64", "[64,64]", "128"):
        presa = config_for("presa", [f"hidden_sizes={text}"]).hidden_sizes
        bc = config_for("bc-all", [f"a_hidden_sizes={text}"]).a_hidden_sizes
        assert list(presa) == list(bc) and all(type(v) is int for v in list(presa) + list(bc)), text


@pytest.mark.parametrize("name", ALGORITHMS)
def test_scalar_settings_follow_their_declared_type(name):
    config = config_for(name, [])
    types = field_types(type(config))
    ints = [k for k, t in types.items() if t is int]
    floats = [k for k, t in types.items() if t is float]
    bools = [k for k, t in types.items() if t is bool]
    optional_ints = [k for k, t in types.items() if t == (int | None)]
    assert ints, f"{name} has no integer setting"
    key = ints[0]
    assert getattr(config_for(name, [f"{key}=12"]), key) == 12
    assert getattr(config_for(name, [f"{key}=1e2"]), key) == 100
    if floats:
        value = getattr(config_for(name, [f"{floats[0]}=3e-4"]), floats[0])
        assert type(value) is float and value == 3e-4
    for key in bools[:1]:
        for text, want in (("true", True), ("False", False), ("1", True), ("0", False)):
            assert getattr(config_for(name, [f"{key}={text}"]), key) is want
    for key in optional_ints[:1]:
        config_for(name, [f"{key}=none"])  # accepted (config_for may fill the None in)
        assert getattr(config_for(name, [f"{key}=7"]), key) == 7


def _message(name: str, key: str, value: str, why: str) -> str:
    return rf"^bad --set {re.escape(key)}={re.escape(value)} for {re.escape(name)}: {why}"


@pytest.mark.parametrize("name", ALGORITHMS)
def test_bad_settings_give_one_message_form(name):
    types = field_types(type(config_for(name, [])))
    key = next(k for k, t in types.items() if t is int)
    with pytest.raises(BadInput, match=_message(name, key, "1.5", "expected a whole number")):
        config_for(name, [f"{key}=1.5"])
    with pytest.raises(BadInput, match=_message(name, "nosuchsetting", "1", "unknown setting; known settings: ") + re.escape(", ".join(sorted(types)))):
        config_for(name, ["nosuchsetting=1"])
    lists = [k for k, t in types.items() if _int_list(t)]
    for key in lists[:1]:
        with pytest.raises(BadInput, match=_message(name, key, "64,wide", "expected a list of whole numbers: 64,64 or \\[64,64\\]")):
            config_for(name, [f"{key}=64,wide"])
    bools = [k for k, t in types.items() if t is bool]
    for key in bools[:1]:
        with pytest.raises(BadInput, match=_message(name, key, "maybe", "expected true or false")):
            config_for(name, [f"{key}=maybe"])


@dataclasses.dataclass(frozen=True)
class Example:
    widths: tuple[int, ...] = (1,)
    rates: list[float] = dataclasses.field(default_factory=lambda: [0.1])
    betas: tuple[float, float] = (0.9, 0.999)
    steps: int | None = None
    name: str = "x"
    on: bool = False


def test_the_rule_on_a_frozen_dataclass():
    base = Example()
    out = apply_overrides(base, {"widths": "8,8", "rates": 0.5, "betas": "0.5,0.6", "steps": "3", "name": 7, "on": 1}, "ex")
    assert out == Example(widths=(8, 8), rates=[0.5], betas=(0.5, 0.6), steps=3, name="7", on=True)
    assert base == Example()  # frozen: a copy, the original untouched
    for key, value, why in (("betas", "0.5", "expected 2 comma-separated values"), ("steps", True, "expected a whole number"),
                            ("on", 2, "expected true or false"), ("name", [1], "expected a string"), ("steps", None, None)):
        if why is None:
            assert apply_overrides(base, {key: value}, "ex").steps is None
            continue
        with pytest.raises(BadInput, match=f"bad --set {key}=.* for ex: {why}"):
            apply_overrides(base, {key: value}, "ex")


def test_feedback_settings_take_the_same_rule():
    settings = FeedbackSettings().with_overrides({"segment_length": "20", "flip_prob": "0.25", "num_safety_labels": "none"})
    assert (settings.segment_length, settings.flip_prob, settings.num_safety_labels) == (20, 0.25, None)
    with pytest.raises(FeedbackError, match=r"^bad --set feedback.segment_length=2.5 for the feedback teacher: expected a whole number \(e.g. 512\) or none$"):
        FeedbackSettings().with_overrides({"segment_length": 2.5})
