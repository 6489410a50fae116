"""Jobs seen as ComfyUI sees prompts: queue tuples, history entries, /api/jobs items.

A comfyrun job submitted through POST /prompt keeps ComfyUI's bookkeeping in its metadata
(`comfy_number`, `comfy_client_id`) and options (`extra_data`); jobs from other dialects are
shown too, with defaults. Output files point at comfyrun's own storage: each stored key
"<job_id>/<node_id>/<file>" becomes {"filename": file, "subfolder": "<job_id>/<node_id>",
"type": "output"}, which GET /view serves back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from comfyrun.core.job import JSON, Job, JobStatus, Output, OutputType
from comfyrun.dispatch.relay import CLIENT_ID_KEY
from comfyrun.store.base import QueueEntry

DIALECT = "comfyui"
#: Metadata keys this dialect writes on the jobs it submits.
META_DIALECT = "dialect"
META_NUMBER = "comfy_number"
META_CLIENT_ID = CLIENT_ID_KEY  # the relay of ComfyUI messages goes to jobs with one

#: ComfyUI's output list names by kind, for outputs whose original key is unknown.
_KIND_KEYS = {
    OutputType.IMAGE: "images",
    OutputType.VIDEO: "gifs",
    OutputType.AUDIO: "audio",
    OutputType.TEXT: "text",
    OutputType.FILE: "files",
    OutputType.LATENT: "latents",
}
_OUTPUT_CLASS_PREFIXES = ("Save", "Preview", "Show")


def ms(ts: float | None) -> int | None:
    return None if ts is None else int(ts * 1000)


def number_of(job: Job) -> int | float:
    return _number(job.metadata)


def _number(metadata: Mapping[str, Any]) -> int | float:
    value = metadata.get(META_NUMBER)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else 0


def extra_data_of(job: Job) -> JSON:
    return _extra_data(job.options, job.metadata)


def _extra_data(options: Mapping[str, Any], metadata: Mapping[str, Any]) -> JSON:
    extra = options.get("extra_data")
    data: JSON = dict(extra) if isinstance(extra, Mapping) else {}
    client_id = metadata.get(META_CLIENT_ID)
    if client_id is not None:
        data.setdefault("client_id", client_id)
    return data


def outputs_to_execute(workflow: Mapping[str, Any], output_nodes: Iterable[str]) -> list[str]:
    """The output nodes of the prompt: those with outputs, and Save*/Preview*/Show* nodes."""
    ids = set(output_nodes)
    for node_id, node in workflow.items():
        class_type = node.get("class_type") if isinstance(node, Mapping) else None
        if isinstance(class_type, str) and class_type.startswith(_OUTPUT_CLASS_PREFIXES):
            ids.add(str(node_id))
    return sorted(ids, key=_node_sort_key)


def _node_sort_key(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 62, node_id)


def queue_item(job: Job) -> list[Any]:
    """[number, prompt_id, prompt, extra_data, outputs_to_execute], as in GET /queue."""
    nodes = (o.node_id for o in job.outputs)
    return _prompt_tuple(job.id, job.workflow, job.options, job.metadata, nodes)


def queue_entry_item(entry: QueueEntry) -> list[Any]:
    """`queue_item` of a job as a listing of the queue reads it."""
    return _prompt_tuple(
        entry.id, entry.workflow, entry.options, entry.metadata, entry.output_nodes
    )


def _prompt_tuple(
    prompt_id: str,
    workflow: Mapping[str, Any],
    options: Mapping[str, Any],
    metadata: Mapping[str, Any],
    output_nodes: Iterable[str],
) -> list[Any]:
    return [
        _number(metadata),
        prompt_id,
        workflow,
        _extra_data(options, metadata),
        outputs_to_execute(workflow, output_nodes),
    ]


def split_key(key: str) -> tuple[str, str]:
    """A storage key → (subfolder, filename)."""
    subfolder, _, filename = key.rpartition("/")
    return subfolder, filename


def file_ref(output: Output) -> JSON | None:
    """{"filename", "subfolder", "type": "output"} for a stored output file."""
    if not output.storage_key:
        return None
    subfolder, filename = split_key(output.storage_key)
    return {"filename": filename, "subfolder": subfolder, "type": "output"}


def output_key_name(output: Output) -> str:
    key = output.meta.get("key")
    return key if isinstance(key, str) and key else _KIND_KEYS.get(output.type, "files")


def history_outputs(outputs: Iterable[Output]) -> dict[str, JSON]:
    """{node_id: {"images": [refs], "text": [...]}} for the given outputs."""
    by_node: dict[str, JSON] = {}
    for out in outputs:
        node = by_node.setdefault(out.node_id, {})
        key = output_key_name(out)
        ref = file_ref(out)
        if ref is not None:
            node.setdefault(key, []).append(ref)
        elif out.text is not None:
            node.setdefault(key, []).append(out.text)
    return by_node


def execution_error(job: Job, timestamp: int | None) -> JSON:
    """ComfyUI's `execution_error` payload for a failed job."""
    err = job.error
    details = err.details if err is not None and isinstance(err.details, Mapping) else {}
    traceback = err.traceback if err is not None and err.traceback else ""
    return {
        "prompt_id": job.id,
        "node_id": err.node_id if err is not None else None,
        "node_type": err.class_type if err is not None else None,
        "executed": list(details.get("executed", [])),
        "exception_message": err.message if err is not None else "failed",
        "exception_type": str(details.get("exception_type") or (err.code if err else "Error")),
        "traceback": traceback.splitlines(keepends=True) if traceback else [],
        "current_inputs": dict(details.get("current_inputs", {})),
        "current_outputs": list(details.get("current_outputs", [])),
        "timestamp": timestamp,
    }


def interrupted(job: Job, timestamp: int | None) -> JSON:
    err = job.error
    return {
        "prompt_id": job.id,
        "node_id": err.node_id if err is not None else None,
        "node_type": err.class_type if err is not None else None,
        "executed": [],
        "timestamp": timestamp,
    }


def is_interrupt(job: Job) -> bool:
    return job.status in (JobStatus.CANCELED, JobStatus.CANCELING) or (
        job.status is JobStatus.EXPIRED and job.error is None and not job.outputs
    )


def history_messages(job: Job) -> list[list[Any]]:
    start = ms(job.execution_start or job.started_at or job.created_at)
    end = ms(job.finished_at)
    messages: list[list[Any]] = [
        ["execution_start", {"prompt_id": job.id, "timestamp": start}],
        ["execution_cached", {"nodes": [], "prompt_id": job.id, "timestamp": start}],
    ]
    if job.status is JobStatus.SUCCEEDED or (job.status is JobStatus.EXPIRED and not job.error):
        messages.append(["execution_success", {"prompt_id": job.id, "timestamp": end}])
    elif job.status is JobStatus.CANCELED:
        messages.append(["execution_interrupted", interrupted(job, end)])
    else:
        messages.append(["execution_error", execution_error(job, end)])
    return messages


def history_entry(job: Job) -> JSON:
    """The GET /history/{id} value of a finished job (callers skip unfinished ones)."""
    ok = job.status is JobStatus.SUCCEEDED or (job.status is JobStatus.EXPIRED and not job.error)
    outputs = history_outputs(job.outputs)
    return {
        "prompt": queue_item(job),
        "outputs": outputs,
        "status": {
            "status_str": "success" if ok else "error",
            "completed": ok,
            "messages": history_messages(job),
        },
        "meta": {
            node_id: {
                "node_id": node_id,
                "display_node": node_id,
                "parent_node": None,
                "real_node_id": node_id,
            }
            for node_id in outputs
        },
    }


# /api/jobs (ComfyUI's newer job endpoints) ----------------------------------------------------

PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED = (
    "pending",
    "in_progress",
    "completed",
    "failed",
    "cancelled",
)
JOB_STATUSES = (PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED)


def job_status(job: Job) -> str:
    if job.status is JobStatus.QUEUED or job.waiting:
        return PENDING
    if job.status in (JobStatus.RUNNING, JobStatus.CANCELING):
        return IN_PROGRESS
    if job.status is JobStatus.CANCELED:
        return CANCELLED
    if job.status is JobStatus.FAILED or job.error is not None:
        return FAILED
    return COMPLETED


def statuses_for(names: Iterable[str]) -> list[JobStatus]:
    """comfyrun statuses behind ComfyUI job statuses (unknown names are ignored). A running job
    whose prompt waits in a backend's queue is pending: `running` stands behind both pending and
    in_progress (filter the jobs read with `job_status`)."""
    table = {
        PENDING: [JobStatus.QUEUED, JobStatus.RUNNING],
        IN_PROGRESS: [JobStatus.RUNNING, JobStatus.CANCELING],
        COMPLETED: [JobStatus.SUCCEEDED, JobStatus.EXPIRED],
        FAILED: [JobStatus.FAILED],
        CANCELLED: [JobStatus.CANCELED],
    }
    out: list[JobStatus] = []
    for name in names:
        out += [s for s in table.get(name, []) if s not in out]
    return out


def _preview(outputs: Mapping[str, JSON]) -> tuple[int, JSON | None]:
    count, preview = 0, None
    for node_id, node in outputs.items():
        for media, items in node.items():
            for item in items:
                if not isinstance(item, dict):
                    continue
                count += 1
                if preview is None and media in ("images", "gifs", "video", "audio"):
                    preview = {**item, "nodeId": node_id, "mediaType": media}
    return count, preview


def api_job(job: Job, *, detail: bool = False) -> JSON:
    """One item of GET /api/jobs (or, with `detail`, GET /api/jobs/{id})."""
    outputs = history_outputs(job.outputs) if job.terminal else {}
    count, preview = _preview(outputs)
    item: JSON = {
        "id": job.id,
        "status": job_status(job),
        "priority": number_of(job),
        "create_time": ms(job.created_at),
        "outputs_count": count,
        "previewable_outputs_count": count,
    }
    if job.terminal:
        item["execution_start_time"] = ms(job.execution_start or job.started_at)
        item["execution_end_time"] = ms(job.finished_at)
        if item["status"] == FAILED:
            item["execution_error"] = execution_error(job, ms(job.finished_at))
        if preview is not None:
            item["preview_output"] = preview
    workflow_id = job.metadata.get("workflow_id")
    if isinstance(workflow_id, str):
        item["workflow_id"] = workflow_id
    item = {k: v for k, v in item.items() if v is not None}
    if detail:
        item["workflow"] = {"prompt": job.workflow, "extra_data": extra_data_of(job)}
        if job.terminal:
            item["outputs"] = outputs
            item["execution_status"] = history_entry(job)["status"]
    return item


__all__ = [
    "DIALECT",
    "JOB_STATUSES",
    "META_CLIENT_ID",
    "META_DIALECT",
    "META_NUMBER",
    "api_job",
    "execution_error",
    "extra_data_of",
    "file_ref",
    "history_entry",
    "history_outputs",
    "interrupted",
    "is_interrupt",
    "job_status",
    "ms",
    "queue_entry_item",
    "queue_item",
    "split_key",
    "statuses_for",
]
