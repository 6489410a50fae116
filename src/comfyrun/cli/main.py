"""The `comfyrun` command. Each command group lives in its own module and registers itself here.

`main` runs it: an error no command turned into its own message (a file that cannot be read,
a server that answers what comfyrun does not expect) is one line and exit status 1, not a
traceback; COMFYRUN_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import os
import sys

import httpx
import typer

from comfyrun.cli import convert, demo, emulator, jobs, keys, models, runpod, server, workflows

app = typer.Typer(
    name="comfyrun",
    help="A durable job server for ComfyUI workflows.",
    no_args_is_help=True,
    add_completion=False,
)

for module in (server, jobs, demo, emulator, convert, runpod, models, workflows, keys):
    module.register(app)


def main() -> None:
    try:
        app()
    except Exception as exc:  # (SystemExit, from typer.Exit and click, passes)
        if os.environ.get("COMFYRUN_DEBUG"):
            raise
        typer.echo(f"error: {describe(exc)}", err=True)
        sys.exit(1)


def describe(exc: Exception) -> str:
    """One line for an error no command described itself."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    if isinstance(exc, httpx.HTTPError | httpx.InvalidURL):
        return f"cannot reach the server: {exc or type(exc).__name__}"
    if isinstance(exc, ValueError | KeyError | TypeError):
        # (mostly an answer that is not what comfyrun expects, from something that is not it)
        return (
            f"unexpected answer or input ({type(exc).__name__}: {exc}); COMFYRUN_DEBUG=1 for more"
        )
    return f"{type(exc).__name__}: {exc}; COMFYRUN_DEBUG=1 for more"


if __name__ == "__main__":
    main()
