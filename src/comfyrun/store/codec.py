"""Job records to and from JSON-able dicts, in one place.

The stores use it for their JSON columns and rows; the API reuses it for its responses. Decoding
ignores keys it does not know, so a newer writer does not break an older reader.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any

from comfyrun import jsontext
from comfyrun.core.batch import Batch, BatchStatus
from comfyrun.core.job import (
    JSON,
    Job,
    JobError,
    JobStatus,
    Output,
    OutputType,
    Progress,
    execution_start,
)
from comfyrun.errors import InvalidRequest
from comfyrun.store.base import JobPage, QueueEntry

#: Job fields kept as JSON (TEXT in SQLite, JSONB in PostgreSQL).
JSON_COLUMNS: frozenset[str] = frozenset(
    {"workflow", "inputs", "options", "metadata", "progress", "outputs", "error", "params"}
)
#: Job fields, in the order of the `jobs` table's columns.
JOB_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Job))

_PROGRESS_FIELDS = tuple(f.name for f in fields(Progress))
_ERROR_FIELDS = tuple(f.name for f in fields(JobError))
_OUTPUT_FIELDS = tuple(f.name for f in fields(Output))
_JOB_FIELDS = frozenset(JOB_COLUMNS)


def progress_to_dict(progress: Progress) -> JSON:
    return {name: getattr(progress, name) for name in _PROGRESS_FIELDS}


def progress_from_dict(data: Mapping[str, Any]) -> Progress:
    return Progress(**{k: v for k, v in data.items() if k in _PROGRESS_FIELDS})


def error_to_dict(error: JobError) -> JSON:
    return {name: getattr(error, name) for name in _ERROR_FIELDS}


def error_from_dict(data: Mapping[str, Any]) -> JobError:
    return JobError(**{k: v for k, v in data.items() if k in _ERROR_FIELDS})


def output_to_dict(output: Output) -> JSON:
    data = {name: getattr(output, name) for name in _OUTPUT_FIELDS}
    data["type"] = output.type.value
    data["meta"] = dict(output.meta)
    return data


def output_from_dict(data: Mapping[str, Any]) -> Output:
    kwargs = {k: v for k, v in data.items() if k in _OUTPUT_FIELDS}
    kwargs["type"] = OutputType(kwargs["type"])
    kwargs["meta"] = dict(kwargs.get("meta") or {})
    return Output(**kwargs)


def job_to_dict(job: Job) -> JSON:
    """Every field of `job` as JSON-able values (enums as their values, parts as dicts)."""
    data: JSON = {name: getattr(job, name) for name in JOB_COLUMNS}
    data["status"] = job.status.value
    data["inputs"] = [dict(i) for i in job.inputs]
    data["progress"] = progress_to_dict(job.progress) if job.progress else None
    data["outputs"] = [output_to_dict(o) for o in job.outputs]
    data["error"] = error_to_dict(job.error) if job.error else None
    return data


def job_from_dict(data: Mapping[str, Any]) -> Job:
    kwargs = {k: v for k, v in data.items() if k in _JOB_FIELDS}
    kwargs["status"] = JobStatus(kwargs.get("status", JobStatus.QUEUED))
    kwargs["inputs"] = tuple(kwargs.get("inputs") or ())
    kwargs["options"] = dict(kwargs.get("options") or {})
    kwargs["metadata"] = dict(kwargs.get("metadata") or {})
    kwargs["params"] = dict(kwargs.get("params") or {})
    progress = kwargs.get("progress")
    kwargs["progress"] = progress_from_dict(progress) if progress else None
    kwargs["outputs"] = tuple(output_from_dict(o) for o in kwargs.get("outputs") or ())
    error = kwargs.get("error")
    kwargs["error"] = error_from_dict(error) if error else None
    return Job(**kwargs)


def job_to_row(job: Job) -> JSON:
    """Column values for the `jobs` table, JSON columns as JSON text."""
    data = job_to_dict(job)
    for name in JSON_COLUMNS:
        data[name] = dump_json(data[name])
    return data


def job_from_row(row: Mapping[str, Any]) -> Job:
    """A job from a `jobs` row; JSON columns may be text (SQLite) or decoded already (JSONB)."""
    data = dict(row)
    for name in JSON_COLUMNS:
        value = data.get(name)
        if isinstance(value, str | bytes):
            data[name] = load_json(value)
    return job_from_dict(data)


def queue_entry_from_row(row: Mapping[str, Any]) -> QueueEntry:
    """A `QueueEntry` from a row of the `queue_*` queries (its JSON columns text or decoded;
    the workflow, options and metadata kept as read). A queued job (most of a listing) is
    read without a look at when it started, and without decoding its outputs when it has
    none."""
    status = _STATUSES[row["status"]]
    outputs = row["outputs"]
    if outputs == "[]" or not outputs:
        nodes: tuple[str, ...] = ()
    else:
        if isinstance(outputs, str | bytes):
            outputs = load_json(outputs)
        nodes = _output_nodes(o.get("node_id") for o in outputs if isinstance(o, Mapping))
    waiting = status is JobStatus.RUNNING and (
        execution_start(row["type"], row["started_at"], row["execution_started_at"]) is None
    )
    return QueueEntry(
        id=row["id"],
        status=status,
        waiting=waiting,
        output_nodes=nodes,
        created_at=float(row["created_at"]),
        raw=(row["workflow"], row["options"], row["metadata"]) if "workflow" in row else None,
    )


#: A status by its column value (a dict look-up: the enum's call is several times dearer).
_STATUSES: dict[str, JobStatus] = {s.value: s for s in JobStatus}


def queue_entry_of(job: Job) -> QueueEntry:
    """A `QueueEntry` from a whole job (the memory store)."""
    return QueueEntry(
        id=job.id,
        status=job.status,
        waiting=job.waiting,
        output_nodes=_output_nodes(o.node_id for o in job.outputs),
        created_at=job.created_at,
        raw=(job.workflow, dict(job.options), dict(job.metadata)),
    )


def _output_nodes(node_ids: Iterable[Any]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(str(n) for n in node_ids if n is not None))


def load_json(text: str | bytes) -> Any:
    """JSON text decoded (comfyrun.jsontext), without its call for the empty values most of a job's columns hold (a
    job read back decodes six columns, each often `{}` or `[]`: a fifth of its decoding)."""
    if text == "{}":
        return {}
    if text == "[]":
        return []
    if text == "null":
        return None
    return jsontext.loads(text)


def dump_json(value: Any) -> str | None:
    """Compact JSON text (comfyrun.jsontext), or None for None (so a NULL column stays NULL).
    A NUL character is written as U+FFFD: PostgreSQL can store none in JSON, and what a
    backend produced (a node's text output, an error's message) failed the run's end there;
    what a client submits with one is refused before it gets here (prompt_checks.refuse_unstorable),
    so every store keeps the same."""
    if value is None:
        return None
    text = jsontext.dumps(value)
    if SURROGATE_ESCAPE in text:  # (the standard library's escapes: a lone surrogate maybe)
        text = jsontext.dumps(jsontext.without_lone_surrogates(value))
    return jsontext.without_nul(text) if NUL_ESCAPE in text else text


#: How JSON text holds a NUL character (or a backslash, then "u0000").
NUL_ESCAPE = "\\u0000"
#: How the standard library's JSON holds a UTF-16 surrogate (orjson writes none: a lone one is
#: what it refuses, and a string holding one is no UTF-8 any answer can carry).
SURROGATE_ESCAPE = "\\ud"


def batch_to_row(batch: Batch) -> JSON:
    """Column values for the `batches` table, JSON columns as JSON text."""
    return {
        "id": batch.id,
        "workflow": batch.workflow,
        "version": batch.version,
        "status": batch.status.value,
        "total": batch.total,
        "options": dump_json(batch.options),
        "metadata": dump_json(batch.metadata),
        "owner": batch.owner,
        "created_at": batch.created_at,
        "finished_at": batch.finished_at,
    }


def batch_from_row(row: Mapping[str, Any]) -> Batch:
    data = dict(row)
    for name in ("options", "metadata"):
        if isinstance(data.get(name), str | bytes):
            data[name] = json.loads(data[name])
    return Batch(
        id=data["id"],
        workflow=data["workflow"],
        version=data["version"],
        total=int(data["total"]),
        status=BatchStatus(data["status"]),
        options=dict(data.get("options") or {}),
        metadata=dict(data.get("metadata") or {}),
        owner=data.get("owner"),
        created_at=float(data["created_at"]),
        finished_at=data.get("finished_at"),
    )


def encode_cursor(created_at: float, job_id: str) -> str:
    """An opaque cursor pointing just after (created_at, id) in newest-first order."""
    raw = json.dumps([created_at, job_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Raises InvalidRequest for a cursor this module did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, job_id = json.loads(raw)
        if not isinstance(job_id, str) or isinstance(created_at, bool):
            raise ValueError(cursor)
        return float(created_at), job_id
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidRequest("invalid cursor", details={"cursor": cursor}) from exc


def page_params(cursor: str | None, limit: int) -> JSON:
    """A newest-first page query's parameters: after the cursor's (created_at, id), one row
    more than the page (to tell whether another follows)."""
    after = decode_cursor(cursor) if cursor is not None else None
    return {
        "after_created": after[0] if after else None,
        "after_id": after[1] if after else None,
        "limit": max(0, limit) + 1,
    }


def job_page(rows: Sequence[Mapping[str, Any]], limit: int) -> JobPage:
    """The page of up to `limit` jobs from a page query's newest-first rows (only the page's
    rows are decoded), with a cursor when more follow."""
    limit = max(0, limit)
    page = [job_from_row(r) for r in rows[:limit]]
    last = page[-1] if page and len(rows) > limit else None
    return JobPage(jobs=page, next_cursor=encode_cursor(last.created_at, last.id) if last else None)


__all__ = [
    "JOB_COLUMNS",
    "JSON_COLUMNS",
    "batch_from_row",
    "batch_to_row",
    "decode_cursor",
    "dump_json",
    "encode_cursor",
    "error_from_dict",
    "error_to_dict",
    "job_from_dict",
    "job_from_row",
    "job_page",
    "job_to_dict",
    "job_to_row",
    "output_from_dict",
    "output_to_dict",
    "page_params",
    "progress_from_dict",
    "progress_to_dict",
]
