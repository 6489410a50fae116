"""The fleet tests' own measure: idle time while a job waits, less the spans in which the
machine ran none of the test process; a blocking call on the loop is never such a span."""

from __future__ import annotations

import asyncio
import time

from tests.support.fleet import Run, Wait, idle_while_waiting, machine_stalls


def test_idle_time_while_a_job_waits_leaves_out_the_excluded_spans() -> None:
    runs = [Run("a", "p1", 10.0, 11.0), Run("b", "p2", 14.0, 15.0)]
    waits = [Wait("j1", 10.0, 10.0, frozenset("ab")), Wait("j2", 10.0, 14.0, frozenset("ab"))]
    # b idle 10..14 while j2 waited; a idle 11..14 while j2 waited
    whole = idle_while_waiting(runs, waits, "ab")
    assert whole.longest_s == 4.0 and whole.total_s == 7.0
    cut = idle_while_waiting(runs, waits, "ab", excluding=[(10.5, 12.0), (13.0, 13.5)])
    assert sorted(cut.gaps) == [
        ("a", 12.0, 13.0),
        ("a", 13.5, 14.0),
        ("b", 10.0, 10.5),
        ("b", 12.0, 13.0),
        ("b", 13.5, 14.0),
    ]
    assert cut.longest_s == 1.0 and cut.total_s == 3.5


async def test_a_blocking_call_on_the_loop_is_an_own_stall_not_the_machine_s() -> None:
    async with machine_stalls(over_s=0.1) as stalls:
        await asyncio.sleep(0.05)
        before = time.time()
        time.sleep(0.4)  # noqa: ASYNC251 - the blocking call: its thread sleeps, on no run queue
        after = time.time()
        await asyncio.sleep(0.05)
    middle = (before + after) / 2
    assert any(start <= middle <= end for start, end in stalls.own), stalls
    assert not any(start <= middle <= end for start, end in stalls.machine), stalls
