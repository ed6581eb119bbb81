"""Attribution against a real OPC UA server over TCP whose timing is not ours (issue 12).

The server (tests/opcua/foreign.py) reports no execution state, moves its part counter and writes
a part's probe results together, and stamps each item when it samples it, in the order the client
created the monitored items: for every ordering of the ``signals:`` keys the probe values are
stamped a few ms before or after the counter. Every value must land on its part whatever the order.
"""

from __future__ import annotations

import functools
import itertools
import math
from datetime import UTC, datetime, timedelta

import pytest

from adapters.opcua.client import OpcUaAdapter
from monitor.config import OpcUaMachine
from monitor.model import Observation, PartRecord, PartStatus
from monitor.tracking import ATTRIBUTED_BY_RULE, PartTracker
from tests.opcua.foreign import PROBE_NODES, ForeignCnc
from tests.opcua.helpers import Collector, connected
from tests.test_attribution import program, truth

PROBE_SIGNALS = {"probe.hole1_dia": PROBE_NODES[0], "probe.hole1_x": PROBE_NODES[1], "probe.hole1_y": PROBE_NODES[2]}
NODES = {"part.count": "PartCounter", "program.name": "ActiveProgram", "spindle.load": "Spindle.Load", **PROBE_SIGNALS}
PARTS = 4
CYCLE_S = 3.0
"""Shorter than the default grace window (5 s): the case where results went to the previous part."""
T0 = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=10)
"""Controller time of the first cycle: after the server's initial values (stamped when it started)."""


def machine(cnc: ForeignCnc, keys: list[str], **tracking: object) -> OpcUaMachine:
    return OpcUaMachine.model_validate(
        {
            "id": "m1",
            "source": {
                "type": "opcua",
                "endpoint": cnc.endpoint,
                "publishing_interval_ms": 50,
                "sampling_interval_ms": 10,
                "queue_size": 20,
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 0.5,
            },
            "signals": {k: cnc.node_address("Probe.ResultId" if k == "part.id" else NODES[k]) for k in keys},
            "tracking": tracking,
        }
    )


async def run_batch(
    cnc: ForeignCnc, config: OpcUaMachine, first: int, *, nan_at: int | None = None
) -> tuple[list[PartRecord], PartTracker]:
    """Connect the real adapter, let the server make PARTS parts, track what arrived (the probe
    macro writing NaN into hole1_x for part ``nan_at``)."""
    adapter = OpcUaAdapter(config, seed=1)
    async with adapter:
        collector = Collector(adapter)
        try:
            await collector.wait(connected, what="connected")
            await collector.wait(lambda items: any(o.signal == "part.count" for o in items), what="counter baseline")
            start = T0 + timedelta(hours=first)
            together = [k for k in config.signals if k in ("part.count", "part.id", *PROBE_SIGNALS)]
            for n in range(first, first + PARTS):
                values = truth(n)
                if n == nan_at:
                    values["probe.hole1_x"] = math.nan
                await cnc.cycle(n, [values[s] for s in PROBE_SIGNALS], start, cycle_s=CYCLE_S, loads=(30.0 + n, 50.0 + n, 40.0))
                start += timedelta(seconds=CYCLE_S)
                # a real cycle lasts far longer than a publishing interval: the next part's values
                # come in a later publish (within one, a server may send its items in any order)
                expect = {s: values.get(s, float(n)) for s in together}
                await collector.wait(
                    functools.partial(_has_all, expect),
                    what=f"part {n}'s values",
                )
        finally:
            await collector.aclose()
    tracker = PartTracker("m1", {"O1001": program()}, config.tracking, part_id_mapped="part.id" in config.signals)
    parts: list[PartRecord] = []
    for obs in collector.items:
        parts += tracker.update(obs)
    # the next part's end: what the daemon's clock would do once grace has run out
    parts += tracker.advance(T0 + timedelta(hours=first, seconds=CYCLE_S * PARTS + 30))
    return parts, tracker


def _has_all(expect: dict[str, float], items: list[Observation]) -> bool:
    return all(any(o.signal == s and _same(o.value, v) for o in items) for s, v in expect.items())


def _same(value: object, want: float) -> bool:
    return value == want or (want != want and isinstance(value, float) and value != value)


def check(parts: list[PartRecord], first: int) -> None:
    assert [(p.counter, p.status) for p in parts] == [(n, PartStatus.COMPLETE) for n in range(first, first + PARTS)], [
        (p.counter, p.status, p.notes) for p in parts
    ]
    for p in parts:
        assert p.counter is not None and p.measurements == truth(p.counter)
        assert p.spindle.mean_load is not None and p.spindle.peak_load == 50.0 + p.counter


async def test_every_ordering_of_counter_and_probes_over_tcp() -> None:
    """All 24 orderings of part.count and the three probe signals (spindle and program around them)."""
    async with ForeignCnc(seed=3) as cnc:
        flagged = 0
        for i, order in enumerate(itertools.permutations(["part.count", *PROBE_SIGNALS])):
            keys = ["spindle.load", *order, "program.name"] if i % 2 else ["program.name", *order, "spindle.load"]
            first = 1 + i * PARTS
            parts, _ = await run_batch(cnc, machine(cnc, keys), first)
            check(parts, first)
            probes_after_count = order.index("part.count") < 3
            assert all((ATTRIBUTED_BY_RULE in p.flags) == probes_after_count for p in parts)
            flagged += probes_after_count
        assert flagged == 18


@pytest.mark.parametrize(
    "order",
    [
        ["probe.hole1_dia", "probe.hole1_x", "part.id", "probe.hole1_y", "part.count"],
        ["part.count", "part.id", "probe.hole1_y", "probe.hole1_x", "probe.hole1_dia"],
        ["part.id", "part.count", "probe.hole1_x", "probe.hole1_dia", "probe.hole1_y"],
    ],
)
async def test_result_id_mapped_attributes_by_it_over_tcp(order: list[str]) -> None:
    async with ForeignCnc(seed=5) as cnc:
        parts, _ = await run_batch(cnc, machine(cnc, ["program.name", "spindle.load", *order]), 1)
        check(parts, 1)
        assert [p.part_id for p in parts] == [str(n) for n in range(1, PARTS + 1)]
        assert not any(p.flags for p in parts)


async def test_server_sampling_order_differs_from_ours() -> None:
    """The server samples in its own fixed order (results first), whatever the client's order."""
    async with ForeignCnc(seed=9) as cnc:
        cnc.order = [*PROBE_NODES, "Probe.ResultId", "PartCounter"]
        parts, _ = await run_batch(cnc, machine(cnc, ["part.count", "spindle.load", "program.name", *PROBE_SIGNALS]), 1)
        check(parts, 1)  # with the default tracking settings


@pytest.mark.parametrize("counter_first", [True, False])
async def test_a_nan_probe_value_is_noted_on_its_own_part_over_tcp(counter_first: bool) -> None:
    """The macro writes NaN into hole1_x for part 2, stamped a few ms after (or before) the counter:
    part 2, and only part 2, says so and misses the value; the others are whole; counted once."""
    order = ["part.count", *PROBE_SIGNALS] if counter_first else [*PROBE_SIGNALS, "part.count"]
    async with ForeignCnc(seed=7) as cnc:
        parts, tracker = await run_batch(cnc, machine(cnc, ["program.name", "spindle.load", *order]), 1, nan_at=2)
    assert [p.counter for p in parts] == list(range(1, PARTS + 1))
    noted = [[n for n in p.notes if "not a measurement" in n] for p in parts]
    assert [bool(n) for n in noted] == [False, True, False, False], [p.notes for p in parts]
    assert noted[1][0].startswith("probe.hole1_x wrote NaN at ") and noted[1][0].endswith(": not a measurement; no value")
    assert parts[1].status is PartStatus.INCOMPLETE and parts[1].missing == ("probe.hole1_x",)
    assert all(p.status is PartStatus.COMPLETE and p.measurements == truth(p.counter or 0) for p in parts if p.counter != 2)
    assert tracker.counts["non_numeric_probe_values"] == 1
