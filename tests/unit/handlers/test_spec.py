"""Job types, handler targets, chains and a worker's type plan, as data."""

from __future__ import annotations

import pytest

from comfyrun.errors import InvalidParams
from comfyrun.handlers import Handler, HandlerRegistry, RegistryError
from comfyrun.handlers.spec import (
    ChainStep,
    Target,
    TypePlan,
    parse_chain,
    parse_target,
    plan_types,
    valid_type_name,
)


@pytest.mark.parametrize("name", ["image", "ffmpeg", "video-interp", "up_scale2"])
def test_type_names(name: str) -> None:
    assert valid_type_name(name)


@pytest.mark.parametrize("name", ["", "Image", "2x", "a b", "x" * 65, None, 3, "-x"])
def test_bad_type_names(name: object) -> None:
    assert not valid_type_name(name)


def test_targets() -> None:
    assert parse_target("pkg.mod:run") == Target("pkg.mod", "run")
    assert parse_target(" up = pkg.mod:Cls.run ") == Target("pkg.mod", "Cls.run", "up")
    for bad in ("pkg.mod", "pkg mod:run", ":run", "pkg:", "Bad=pkg:run", "a=b=c:d"):
        with pytest.raises(ValueError):
            parse_target(bad)


def test_chains() -> None:
    assert parse_chain(None) == ()
    steps = parse_chain(
        [{"type": "image", "params": {"format": "webp"}}, {"type": "ffmpeg", "outputs": "join"}]
    )
    assert steps == (
        ChainStep("image", {"format": "webp"}, "replace"),
        ChainStep("ffmpeg", {}, "join"),
    )
    for bad in (
        {"type": "image"},  # not a list
        [{"type": "comfy"}],
        [{"params": {}}],
        [{"type": "image", "params": []}],
        [{"type": "image", "outputs": "merge"}],
        [{"type": "image", "extra": 1}],
        [{"type": "image"}] * 9,
        ["image"],
    ):
        with pytest.raises(InvalidParams):
            parse_chain(bad)


def test_type_plans() -> None:
    handlers = ["ffmpeg", "image"]
    assert plan_types(None, handlers, has_backends=True) == TypePlan(
        True, ("ffmpeg", "image"), ("comfy", "ffmpeg", "image")
    )
    # no ComfyUI: the handlers only; comfy jobs stay queued for others
    assert plan_types(None, handlers, has_backends=False) == TypePlan(
        False, ("ffmpeg", "image"), ("ffmpeg", "image")
    )
    assert plan_types(["comfy", "image"], handlers, has_backends=False) == TypePlan(
        False, ("image",), ("image",)
    )
    # ...or failed here with a clear message, when set to
    assert plan_types(
        ["comfy", "image"], handlers, has_backends=False, comfy_without_backends="fail"
    ) == TypePlan(False, ("comfy", "image"), ("comfy", "image"))
    assert plan_types(["image"], handlers, has_backends=True) == TypePlan(
        False, ("image",), ("image",)
    )
    with pytest.raises(ValueError, match="upscale"):
        plan_types(["comfy", "upscale"], handlers, has_backends=True)


def _noop(ctx: object) -> None:
    return None


def test_registry_sources_and_names() -> None:
    registry = HandlerRegistry.load(
        ["tests.support.handlers:blocking", "renamed=tests.support.handlers:sleepy"],
        entry_points=False,
    )
    assert registry.types == {"image", "ffmpeg", "blocking", "renamed"}
    renamed = registry.get("renamed")
    assert renamed is not None and renamed.is_async
    blocking = registry.get("blocking")
    assert blocking is not None and not blocking.is_async
    assert HandlerRegistry.load(entry_points=False, builtins=False).types == frozenset()
    for bad in ("nope.module:x", "tests.support.handlers:missing", "not a target"):
        with pytest.raises(RegistryError):
            HandlerRegistry.load([bad], entry_points=False)
    with pytest.raises(RegistryError):
        HandlerRegistry([Handler("comfy", _noop)])
