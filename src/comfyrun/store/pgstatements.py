"""PostgreSQL's writes of one statement: the named queries (`Q`), the NOTIFY payloads, and the
commonest changes of a job's life made in one statement, its own transaction (the pooled
connections are in autocommit): a plain job's enqueue, a claim of the head of the queue, and
the end of a job whose end settles nothing more. `OneStatementWrites` sits between
`PostgresStore` and `SQLStore`, whose general way (a transaction) the others take.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from comfyrun.core.batch import NO_GROUP
from comfyrun.core.job import COMFY, JSON, Job, JobStatus, NewJob, Progress, may_end
from comfyrun.core.state import Event
from comfyrun.errors import Conflict
from comfyrun.handlers.spec import valid_type_name
from comfyrun.store import tenancy, transition
from comfyrun.store.base import Changes, ClaimChoice, ClaimNote, JobEvent, JobStamp, clock_or
from comfyrun.store.codec import (
    dump_json,
    job_from_row,
    job_to_row,
    output_to_dict,
    progress_to_dict,
)
from comfyrun.store.queries import queries
from comfyrun.store.sqlstore import SQLStore

Q = {name: sql.encode() for name, sql in queries("postgresql").items()}
# The templates filled in, each under a name of its own: claim_one with each candidate (over
# every type, among comfy jobs, among one handler type's), end_plain with the transition of a
# job whose change of status settles nothing more.
assert Q["claim_id"].count(b"%(id)s") == 1
_CLAIM = Q.pop("claim_one")
for _suffix in ("", "_comfy", "_type"):
    _candidate = b"(" + Q[f"claim_next{_suffix}"] + b")"
    Q[f"claim_one{_suffix}"] = _CLAIM.replace(
        b"{claim}", Q["claim_id"].replace(b"%(id)s", _candidate)
    )
_PLAIN = b"\n  AND batch_id IS NULL AND NOT (options ? 'webhook')\nRETURNING *"
assert Q["transition"].endswith(b"\nRETURNING *")
Q["end_plain"] = Q["end_plain"].replace(
    b"{transition}", Q["transition"].removesuffix(b"\nRETURNING *") + _PLAIN
)
WORK = "w"
#: The flag of a NOTIFY for a job created claimed (see `payload`).
NEW = "+"
#: The flags of a NOTIFY for a job claimed (see `payload`).
START = "s;"
#: The flag of a NOTIFY whose events change no status (log lines, progress, outputs: see
#: `payload`).
LOGGED = "l;"
#: A NOTIFY's first mark: its event may end the job, or may not.
ENDING, NOT_ENDING = "t;", "n;"


class OneStatementWrites(SQLStore):
    """The one-statement writes of PostgresStore (which gives `channel` and its connections)."""

    channel: str

    async def enqueue(
        self, new: NewJob, *, now: float | None = None, replacing: JobStamp | None = None
    ) -> tuple[Job, bool]:
        """A job of no batch, owner or idempotency key (most submissions) is queued in one
        statement, its own transaction (enqueue_plain): one round trip where the general way
        (`SQLStore.enqueue`) takes five (BEGIN, the fair queue's head, the insert, the event
        with its NOTIFY, COMMIT). Any other job, or one that replaces a finished one, goes
        the general way."""
        job = transition.enqueued(new, clock_or(now))
        if (
            new.idempotency_key is not None
            or new.owner is not None
            or job.fair_key != NO_GROUP
            or replacing is not None
        ):
            return await super().enqueue(new, now=now, replacing=replacing)
        event = transition.enqueue_event(job)
        params = job_to_row(job) | {
            "event": dump_json(event),
            "channel": self.channel,
            "payload": payload(
                job.id, ending=may_end("status", event), work=True, job_type=job.type
            ),
        }
        async with self._read() as conn:  # autocommit: the statement commits by itself
            row = await self._one(conn, "enqueue_plain", params)
        if row is None:
            raise Conflict(f"job {job.id} already exists", details={"job_id": job.id})
        return job.evolve(fair_tag=float(row["fair_tag"])), True

    async def claim(
        self,
        worker_id: str,
        lease_s: float,
        *,
        now: float | None = None,
        note: ClaimNote | None = None,
        choice: ClaimChoice | None = None,
        types: Sequence[str] | None = None,
    ) -> Job | None:
        """A claim of the head of the queue (over every type, or among one type's jobs) is one
        statement, its own transaction (claim_one: the job taken, its events, the NOTIFY): one
        round trip where the general way (`SQLStore.claim`) takes five (BEGIN, the candidate,
        the claim, its events, COMMIT), and one where it finds nothing instead of three. A
        claim with a choice, or over several types, goes the general way."""
        kinds = None if types is None else set(types)
        if choice is not None or (kinds is not None and len(kinds) != 1):
            return await super().claim(
                worker_id, lease_s, now=now, note=note, choice=choice, types=types
            )
        now = clock_or(now)
        kind = None if kinds is None else kinds.pop()
        params = {
            "worker_id": worker_id,
            "lease_expires_at": now + lease_s,
            "now": now,
            "type": kind,
            # its attempts are the claimed row's (the statement sets them)
            "event": dump_json(transition.claim_event_of(worker_id, 0)),
            "note_kind": note.kind if note is not None else None,
            "note": dump_json(note.data) if note is not None else None,
            "channel": self.channel,
            "prefix": payload("", ending=False, work=False, job_type=None, started=True),
        }
        name = (
            "claim_one"
            if kind is None
            else "claim_one_comfy"
            if kind == COMFY
            else "claim_one_type"
        )
        async with self._read() as conn:  # autocommit: the statement commits by itself
            row = await self._one(conn, name, params)
        if row is None:
            return None
        del row["notified"]
        return job_from_row(row)

    async def append_event(self, job_id: str, kind: str, data: JSON) -> JobEvent:
        """One statement, its own transaction (append_one: the job's row lock, the event, its
        NOTIFY): one round trip where a transaction takes four (BEGIN, lock_job, the event,
        COMMIT). A run's log lines, previews and relayed ComfyUI messages go this way."""
        now = time.time()
        params = event_params(
            self.channel, job_id, kind, data, now, event_payload(job_id, kind, data)
        )
        async with self._write_one() as conn:
            row = await self._one(conn, "append_one", params)
        if row is None:
            raise transition.not_found(job_id)
        return JobEvent(id=int(row["id"]), job_id=job_id, kind=kind, data=data, created_at=now)

    async def record_progress(self, job_id: str, progress: Progress) -> None:
        """One statement, its own transaction (progress_one: the snapshot, its event, its
        NOTIFY), where a transaction takes four."""
        data = progress_to_dict(progress)
        params = {
            "job_id": job_id,
            "data": dump_json(data),
            "created_at": time.time(),
            "channel": self.channel,
            "payload": event_payload(job_id, "progress", data),
        }
        async with self._write_one() as conn:
            row = await self._one(conn, "progress_one", params)
        if row is None:
            raise transition.not_found(job_id)

    async def transition(
        self,
        job_id: str,
        event: Event,
        *,
        expect: JobStatus,
        changes: Changes | None = None,
        now: float | None = None,
        worker_id: str | None = None,
    ) -> Job:
        """A change of status that does not requeue the job is one statement, its own
        transaction (end_plain: the new state with its outputs, their events and the status
        event, its key's usage, one NOTIFY), for a job of no batch or webhook: one round trip
        where the general way (`SQLStore.transition`) takes four or five. Any other job, or a
        job not as expected, goes the general way after it (one statement more)."""
        now = clock_or(now)
        p = transition.plan(expect, event, changes, now)
        if not p.changes_status or p.status is JobStatus.QUEUED:
            return await super().transition(
                job_id, event, expect=expect, changes=changes, now=now, worker_id=worker_id
            )
        outputs = [output_to_dict(o) for o in (changes.outputs if changes is not None else ())]
        # its attempts are the updated row's (the statement sets them)
        status = transition.status_event_of(p, 0, now)
        events = [*(("output", data) for data in outputs), ("status", status)]
        params = transition.plan_params(p, job_id, worker_id) | {
            "outputs": dump_json(outputs) if outputs else None,
            "now": now,
            "events": dump_json([[kind, data] for kind, data in events]),
            "channel": self.channel,
            "payload": payload(job_id, ending=may_end("status", status), work=False, job_type=None),
            "takes_off": tenancy.takes_off(p),
            "ends": int(tenancy.plan_ends(p)),
        }
        async with self._read() as conn:  # autocommit: the statement commits by itself
            row = await self._one(conn, "end_plain", params)
        if row is None:
            return await super().transition(
                job_id, event, expect=expect, changes=changes, now=now, worker_id=worker_id
            )
        del row["notified"]
        return job_from_row(row)


def payload(
    job_id: str,
    *,
    ending: bool,
    work: bool,
    job_type: str | None,
    new: bool = False,
    started: bool = False,
    status: bool = True,
) -> str:
    """A NOTIFY for events of a job: "e:<id>", after the mark of whether they may end it and,
    when the job became claimable, the work flags; when it was created claimed (handed off to
    a worker of the process that took it), the new-job flags instead: no worker elsewhere
    has it to claim, but an API node elsewhere may have the socket of its ComfyUI client;
    when it was claimed (`started`), the start flag: every API node's ComfyUI sockets hear the
    queue change (a process that reads no such flag takes it for none); when none of its
    events is a status event (`status` False: log lines, progress, outputs), the logged
    flag: a run's cancel watch need not look (store.pgwaits; a process that reads no such
    flag takes it for any other NOTIFY)."""
    if work:
        flags = work_flags(job_type)
    elif new:
        flags = work_flags(job_type, NEW)
    else:
        flags = START if started else "" if status else LOGGED
    return f"{ENDING if ending else NOT_ENDING}{flags}e:{job_id}"


def event_params(channel: str, job_id: str, kind: str, data: JSON, now: float, notify: str) -> JSON:
    """The parameters of a statement that appends one event and NOTIFYs `notify`."""
    return {
        "job_id": job_id,
        "kind": kind,
        "data": dump_json(data),
        "created_at": now,
        "channel": channel,
        "payload": notify,
    }


def event_payload(job_id: str, kind: str, data: JSON) -> str:
    """The NOTIFY of one event appended to a job that stays as claimable as it was."""
    return payload(
        job_id,
        ending=may_end(kind, data),
        work=False,
        job_type=None,
        started=claimed(kind, data),
        status=kind == "status",
    )


def claimed(kind: str, data: JSON) -> bool:
    """Whether an event is a claim's (its status event: the job started)."""
    return kind == "status" and data.get("status") == JobStatus.RUNNING.value


def work_flags(job_type: str | None, flag: str = WORK) -> str:
    """A NOTIFY's flags for a job that became claimable (`flag` "w") or was created claimed
    ("+"): its type when it is a valid type name (no ';' or ':' to confuse the payload), else
    the bare flag. A process that reads only the bare flag still sees it in either."""
    if valid_type_name(job_type):
        return f"{flag}={job_type};"
    return flag


__all__ = [
    "ENDING",
    "LOGGED",
    "NEW",
    "NOT_ENDING",
    "START",
    "WORK",
    "OneStatementWrites",
    "Q",
    "claimed",
    "event_params",
    "event_payload",
    "payload",
    "work_flags",
]
