"""Job types beyond ComfyUI: handlers, their registry and the context they run with.

    from comfyrun.handlers import HandlerContext

    def shout(ctx: HandlerContext) -> None:          # registered as type "shout"
        text = ctx.params.get("text", "")
        ctx.outputs.add_text("shout", text.upper())

See `registry` (how handlers are found), `context` (what they get) and `spec` (job types and
chains as data). The execution adapter lives in comfyrun.dispatch (handler_run, lane, chain).
"""

from comfyrun.errors import HandlerError
from comfyrun.handlers.context import (
    Cancelled,
    CancelToken,
    HandlerContext,
    InputFile,
    OutputSink,
    ProgressReporter,
    Resources,
)
from comfyrun.handlers.registry import Handler, HandlerRegistry, RegistryError
from comfyrun.handlers.spec import ChainStep, parse_chain

__all__ = [
    "CancelToken",
    "Cancelled",
    "ChainStep",
    "Handler",
    "HandlerContext",
    "HandlerError",
    "HandlerRegistry",
    "InputFile",
    "OutputSink",
    "ProgressReporter",
    "RegistryError",
    "Resources",
    "parse_chain",
]
