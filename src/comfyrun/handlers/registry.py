"""The handler registry: which job types this process can run, and with what.

Handlers come from, weakest first: the built-ins (`image`, `ffmpeg`), entry points in the group
`comfyrun.handlers` (name = the job type, value = "module:function"), then the configured list
(`handlers = ["type=module:function", ...]`). A later source replaces an earlier one for the
same type. "comfy" is not a handler here: ComfyUI jobs go to the dispatcher's backends.

A registered object is a `Handler`, or a plain function (sync: run in a thread; async: awaited)
taking a `HandlerContext` and returning its outputs: None (what it gave `ctx.outputs`), or an
iterable of file paths.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from comfyrun.core.job import COMFY, JSON
from comfyrun.handlers.context import HandlerContext, Resources
from comfyrun.handlers.spec import ENTRY_POINT_GROUP, Target, parse_target, valid_type_name

log = logging.getLogger(__name__)

#: What a handler returns: None (its outputs went to ctx.outputs) or the paths of its files.
HandlerResult = Iterable[Path | str] | None
HandlerFunction = Callable[[HandlerContext], HandlerResult | Awaitable[HandlerResult]]
#: Checks (and may normalise) a job's params at submission; raises InvalidParams.
ParamsCheck = Callable[[JSON], JSON]

BUILTINS: Mapping[str, str] = {
    "image": "comfyrun.handlers.image:HANDLER",
    "ffmpeg": "comfyrun.handlers.ffmpeg:HANDLER",
}


@dataclass(frozen=True, slots=True)
class Handler:
    """A job type's handler: `run(ctx)`, and optionally `check_params(params)` run when a job
    is submitted (a bad job is refused with 422 instead of failing on a worker)."""

    type: str
    run: HandlerFunction
    check_params: ParamsCheck | None = None
    description: str = ""

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.run)


class RegistryError(ValueError):
    """A configured handler cannot be loaded."""


class HandlerRegistry:
    """The handlers of this process, by job type, each with its own `Resources`."""

    def __init__(self, handlers: Iterable[Handler] = ()) -> None:
        self._handlers: dict[str, Handler] = {}
        self._resources: dict[str, Resources] = {}
        for handler in handlers:
            self.add(handler)

    @classmethod
    def load(
        cls,
        configured: Sequence[str] = (),
        *,
        entry_points: bool = True,
        builtins: bool = True,
    ) -> HandlerRegistry:
        """Built-ins, then entry points, then `configured` targets. A configured target that
        cannot be loaded raises RegistryError; a broken entry point is logged and skipped (a
        package installed on this machine must not stop the worker)."""
        registry = cls()
        if builtins:
            for name, builtin in BUILTINS.items():
                registry.add(as_handler(name, load_object(parse_target(builtin))))
        if entry_points:
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                try:
                    if not valid_type_name(ep.name) or ep.name == COMFY:
                        raise RegistryError(f"{ep.name!r} is not a valid job type name")
                    registry.add(as_handler(ep.name, ep.load()))
                except Exception as exc:
                    log.warning(
                        "handler entry point %s = %s skipped: %s",
                        ep.name,
                        ep.value,
                        exc,
                        extra={"action": "handler_skipped"},
                    )
        for text in configured:
            try:
                target = parse_target(text)
            except ValueError as exc:
                raise RegistryError(str(exc)) from None
            obj = load_object(target)
            name = target.type or getattr(obj, "type", None) or target.attribute
            registry.add(as_handler(str(name), obj))
        return registry

    def add(self, handler: Handler) -> None:
        if not valid_type_name(handler.type) or handler.type == COMFY:
            raise RegistryError(f"{handler.type!r} cannot be a handler's job type")
        self._handlers[handler.type] = handler
        self._resources.setdefault(handler.type, Resources())

    def get(self, type_: str) -> Handler | None:
        return self._handlers.get(type_)

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self._handlers)

    def resources(self, type_: str) -> Resources:
        return self._resources.setdefault(type_, Resources())

    async def close(self) -> None:
        """Close every handler's resources."""
        for resources in self._resources.values():
            await resources.close()


def load_object(target: Target) -> Any:
    try:
        module = importlib.import_module(target.module)
    except ImportError as exc:
        raise RegistryError(f"handler {target}: cannot import {target.module}: {exc}") from None
    obj: Any = module
    for part in target.attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RegistryError(f"handler {target}: {target.module} has no {part!r}") from None
    return obj


def as_handler(type_: str, obj: Any) -> Handler:
    """`obj` as the handler of `type_`: a Handler (renamed to `type_`) or a function."""
    if isinstance(obj, Handler):
        return Handler(type_, obj.run, obj.check_params, obj.description)
    if callable(obj):
        return Handler(type_, obj, description=(inspect.getdoc(obj) or "").split("\n")[0])
    raise RegistryError(f"handler {type_!r}: {obj!r} is neither a Handler nor a function")


__all__ = [
    "BUILTINS",
    "Handler",
    "HandlerFunction",
    "HandlerRegistry",
    "HandlerResult",
    "ParamsCheck",
    "RegistryError",
    "as_handler",
    "load_object",
]
