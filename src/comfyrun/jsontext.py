"""JSON text in and out on the hot path (the store's columns and events, ComfyUI's messages), by
orjson: a job's workflow is encoded at every enqueue and decoded at every claim and transition,
and the standard library's encoder takes ~10x as long for it (~350 us for a 37 KB workflow,
against ~30 us; decoding ~1.8x). What orjson refuses falls back to the standard library, so
nothing the old encoding took is refused now, nor read back otherwise: integers past 64 bits
(which orjson would read as floats), strings holding lone surrogates, keys that are not strings
(turned to strings, as `json` does), and the NaN and Infinity literals `json` writes.

Two differences remain, both within JSON: text is UTF-8 rather than \\u-escaped ASCII, and a
float that is NaN or infinite (which JSON cannot express; `json` writes a non-standard literal)
is written as null.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import orjson

#: dates and dataclasses go to `default` (str), as they did with `json`
_OPTIONS = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


def dumps(value: Any) -> str:
    """Compact JSON text for `value`; what is not JSON-able becomes its str() (as the store's
    encoding always did)."""
    try:
        return orjson.dumps(value, default=str, option=_OPTIONS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, separators=(",", ":"), default=str)


def dumpb(value: Any) -> bytes:
    """`dumps` as UTF-8 bytes (orjson's own output: no str made and encoded again)."""
    try:
        return orjson.dumps(value, default=str, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, separators=(",", ":"), default=str).encode()


def loads(text: str | bytes | bytearray) -> Any:
    """The value JSON `text` holds; raises ValueError (json.JSONDecodeError) on bad text,
    text nested past the depth JSON is read to included (orjson's limit, 1,024: `json`, which
    reads what orjson refuses, raised RecursionError there, which no caller of a request's
    body took for bad input)."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    try:
        if raw.translate(_DIGITS_AS_ZERO).find(_LONG_NUMBER) >= 0:
            # a number of 19 digits or more may be an integer past 64 bits, which orjson reads
            # as a float (precision lost); json reads it exactly (19 digits in a string: same)
            return json.loads(text)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            # what orjson does not read (NaN/Infinity literals, escaped lone surrogates) json
            # reads; bad text fails here with json's own error
            return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("JSON nested too deeply", "", 0) from None


#: Every digit as 0, so that one find() tells whether text holds a run of 19 digits (~1.5 us a
#: KB: a regular expression takes ~25 us a KB).
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19


#: A NUL character in JSON text: its escape `\u0000` after an even run of backslashes (escaped
#: backslashes); after an odd run it is a backslash, then the text "u0000".
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


_NUL_ESCAPE_TEXT = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def without_nul(text: str) -> str:
    """JSON `text` with each NUL character it holds (the escape `\\u0000`) made U+FFFD; an
    escaped backslash followed by the text "u0000" is left as it is."""
    return _NUL_ESCAPE_TEXT.sub(lambda m: m.group(1) + "\\ufffd", text)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def without_lone_surrogates(value: Any) -> Any:
    """`value` with every lone UTF-16 surrogate in its strings (keys too) made U+FFFD: text a
    handler or a backend decoded with `surrogateescape` (a file name of undecodable bytes)
    can be written as UTF-8 and sent in any answer (one in a stored error made every listing
    of jobs a 500)."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {without_lone_surrogates(k): without_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_lone_surrogates(v) for v in value]
    return value


def holds_nul(value: Any) -> bool:
    """Whether a string anywhere in `value` (keys too) holds a NUL character, which PostgreSQL
    cannot store in JSON or text. One encoding and a search of its bytes (~1 us for a 0.2 KB
    workflow; the regular expression runs only where the escape appears at all)."""
    return encoded_holds_nul(dumpb(value))


def encoded_holds_nul(raw: bytes) -> bool:
    """`holds_nul` for a value's JSON text (`dumpb`'s)."""
    return b"\\u0000" in raw and _NUL_ESCAPE.search(raw) is not None


#: How deep orjson encodes: a value of this many containers, one in the other, it refuses.
_ORJSON_DEPTH = 255


class _Nest(threading.local):
    """A chain of lists, one in the other, with a slot at the bottom: a value put there is
    encoded as if nested that much deeper (one chain a thread, made once)."""

    def __init__(self, levels: int) -> None:
        self.levels = levels
        self.slot: list[Any] = [None]
        self.top: list[Any] = self.slot
        for _ in range(levels - 1):
            self.top = [self.top]


def dumpb_within(value: Any, depth: int) -> bytes | None:
    """`dumpb(value)`, or None when `value` holds containers (objects, lists) nested more than
    `depth` deep (1 to 200; `{"a": [1]}` is 2 deep): what no answer can render (FastAPI's
    encoder, like orjson, stops at ~255 levels: one such value in a job made every listing
    that showed it a 500). orjson tells it in the same pass, the value encoded at the bottom
    of a chain of lists (~2 us more than `dumpb`); what orjson refuses otherwise (integers past
    64 bits, lone surrogates) is walked, then encoded by `json`."""
    nest = _nests.get(depth)
    if nest is None:
        if not 1 <= depth <= 200:
            raise ValueError(f"depth {depth} is not within 1..200")
        nest = _nests.setdefault(depth, _Nest(_ORJSON_DEPTH - 1 - depth))
    levels = nest.levels
    nest.slot[0] = value
    try:
        return orjson.dumps(nest.top, default=str, option=_OPTIONS)[levels:-levels]
    except orjson.JSONEncodeError as exc:
        if "Recursion limit" in str(exc):
            return None
    finally:
        nest.slot[0] = None
    if nested_deeper(value, depth):
        return None
    return json.dumps(value, separators=(",", ":"), default=str).encode()


_nests: dict[int, _Nest] = {}


def nested_deeper(value: Any, depth: int) -> bool:
    """Whether `value` holds containers nested more than `depth` deep (walked with a stack)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if level >= depth:
            return True
        stack.extend((child, level + 1) for child in children)
    return False


__all__ = [
    "dumpb",
    "dumpb_within",
    "dumps",
    "encoded_holds_nul",
    "holds_nul",
    "loads",
    "nested_deeper",
]
