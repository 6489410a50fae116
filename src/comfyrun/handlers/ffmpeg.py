"""The built-in `ffmpeg` handler: frames → video, transcode and concatenate, with the system's
ffmpeg (a job fails with code handler_unavailable, saying so, where ffmpeg is not installed).

params (all optional):
    op        "frames" (an image sequence, in name order, to one video), "transcode" (each input
              to `format`) or "concat" (all inputs, in order, to one file). Default: "frames"
              when every input is an image, else "transcode".
    format    mp4 (default) | webm | mov | mkv | gif | mp3 | wav | flac | ogg
    fps       frames per second of a frame sequence (default 24, 1-240)
    crf       quality for x264 (0-51, default 23) or VP9 (0-63, default 32)
    name      the output file's name, without extension (default "video", or the input's)

Progress comes from ffmpeg's own `-progress` report (frames done of frames in).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from comfyrun.core.job import JSON
from comfyrun.errors import HandlerError, InvalidParams
from comfyrun.handlers.context import HandlerContext, InputFile
from comfyrun.handlers.registry import Handler

VIDEO = ("mp4", "webm", "mov", "mkv", "gif")
AUDIO = ("mp3", "wav", "flac", "ogg")
OPS = ("frames", "transcode", "concat")
_KNOWN = {"op", "format", "fps", "crf", "name"}
#: The tail of ffmpeg's stderr kept for the error message of a failed run.
STDERR_TAIL = 2000


def check_params(params: JSON) -> JSON:
    unknown = set(params) - _KNOWN
    if unknown:
        raise InvalidParams(
            f"ffmpeg: unknown params {sorted(unknown)}", details={"params": sorted(unknown)}
        )
    if params.get("op") is not None and params["op"] not in OPS:
        raise InvalidParams(f"ffmpeg: op is one of {list(OPS)}", details={"op": params["op"]})
    fmt = params.get("format")
    if fmt is not None and fmt not in VIDEO + AUDIO:
        raise InvalidParams(f"ffmpeg: format is one of {list(VIDEO + AUDIO)}")
    if params.get("fps") is not None and not _number_in(params["fps"], 1, 240):
        raise InvalidParams("ffmpeg: fps is a number from 1 to 240")
    if params.get("crf") is not None and not _number_in(params["crf"], 0, 63):
        raise InvalidParams("ffmpeg: crf is a number from 0 to 63")
    name = params.get("name")
    if name is not None and (
        not isinstance(name, str) or not name or "/" in name or name.startswith(".")
    ):
        raise InvalidParams("ffmpeg: name is a plain file name without extension")
    return params


async def run(ctx: HandlerContext) -> None:
    params = check_params(ctx.params)
    ffmpeg = ctx.which("ffmpeg")
    if not ctx.inputs:
        raise HandlerError("ffmpeg: the job has no input file", code="no_input")
    all_images = all(f.content_type.startswith("image/") for f in ctx.inputs)
    op = params.get("op") or ("frames" if all_images else "transcode")
    fmt = params.get("format") or "mp4"
    if op == "frames":
        frames = await asyncio.to_thread(_link_frames, ctx.workdir, ctx.inputs)
        target = ctx.outputs.path_for(f"{params.get('name') or 'video'}.{fmt}")
        args = ["-framerate", str(params.get("fps") or 24), "-i", frames]
        await _ffmpeg(ctx, ffmpeg, [*args, *_encode(fmt, params), str(target)], len(ctx.inputs))
        ctx.outputs.add(target)
    elif op == "concat":
        listing = await asyncio.to_thread(_concat_list, ctx.workdir, ctx.inputs)
        target = ctx.outputs.path_for(f"{params.get('name') or 'concat'}.{fmt}")
        args = ["-f", "concat", "-safe", "0", "-i", str(listing)]
        await _ffmpeg(ctx, ffmpeg, [*args, *_encode(fmt, params), str(target)], None)
        ctx.outputs.add(target)
    else:
        for i, item in enumerate(ctx.inputs):
            stem = params.get("name") or Path(item.name).stem
            target = ctx.outputs.path_for(f"{stem}.{fmt}")
            await _ffmpeg(ctx, ffmpeg, ["-i", str(item.path), *_encode(fmt, params), str(target)])
            ctx.outputs.add(target)
            ctx.progress.report((i + 1) / len(ctx.inputs), step=i + 1, steps=len(ctx.inputs))


def _encode(fmt: str, params: JSON) -> list[str]:
    """Codec arguments for an output `fmt` that plays everywhere."""
    crf = params.get("crf")
    even = ["-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2"]  # x264's yuv420p needs even sides
    if fmt in ("mp4", "mov", "mkv"):
        quality = str(int(crf if crf is not None else 23))
        return [*even, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", quality, "-c:a", "aac"]
    if fmt == "webm":
        quality = str(int(crf if crf is not None else 32))
        return [*even, "-c:v", "libvpx-vp9", "-b:v", "0", "-crf", quality, "-c:a", "libopus"]
    if fmt in AUDIO:
        return ["-vn"]
    return []


async def _ffmpeg(
    ctx: HandlerContext, ffmpeg: str, args: list[str], total_frames: int | None = None
) -> None:
    """Run ffmpeg to the end (killed when the job is cancelled), reporting its progress."""
    command = [ffmpeg, "-hide_banner", "-nostdin", "-y", "-progress", "pipe:1", "-nostats", *args]
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=ctx.workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr = asyncio.ensure_future(proc.stderr.read())
    try:
        async for raw in proc.stdout:
            key, _, value = raw.decode(errors="replace").strip().partition("=")
            if key == "frame" and total_frames and value.isdigit():
                done = min(int(value), total_frames)
                ctx.progress.report(done / total_frames, step=done, steps=total_frames)
        code = await proc.wait()
        err = await stderr
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        stderr.cancel()
        raise
    if code != 0:
        tail = err.decode(errors="replace")[-STDERR_TAIL:]
        raise HandlerError(f"ffmpeg exited with {code}: {tail.strip()}", details={"code": code})


def _link_frames(workdir: Path, inputs: Any) -> str:
    """The frames in name order as frames/frame_000001.<ext>... (links, else copies); returns
    ffmpeg's input pattern."""
    items: list[InputFile] = sorted(inputs, key=lambda f: f.name)
    exts = {Path(f.name).suffix.lower() or ".png" for f in items}
    if len(exts) != 1:
        raise HandlerError(f"ffmpeg: frames of one kind are needed, got {sorted(exts)}")
    ext = exts.pop()
    folder = workdir / "frames"
    folder.mkdir(parents=True, exist_ok=True)
    for i, item in enumerate(items, start=1):
        link = folder / f"frame_{i:06d}{ext}"
        try:
            os.symlink(item.path.resolve(), link)
        except OSError:
            shutil.copyfile(item.path, link)
    return str(folder / f"frame_%06d{ext}")


def _concat_list(workdir: Path, inputs: Any) -> Path:
    listing = workdir / "concat.txt"
    lines = []
    for item in inputs:
        path = str(item.path.resolve()).replace("'", "'\\''")
        lines.append(f"file '{path}'\n")
    listing.write_text("".join(lines))
    return listing


def _number_in(value: Any, low: float, high: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


HANDLER = Handler(
    "ffmpeg", run, check_params, "Frames to video, transcode, concatenate (system ffmpeg)"
)

__all__ = ["HANDLER", "check_params", "run"]
