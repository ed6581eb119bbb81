"""The adapter's one-pass read of a common /sample page gives what the general path gives.

A streamed page whose mapped observations are all plain (one signal, whole value, in sequence
order) is read from a tree straight into canonical observations (``_plain_page``); any other page
goes through the event parser, the document and ``_emit_observations``. Here both paths read the
same pages, generated with every shape a page may have (namespaces, conditions, sets, vendor
elements, repeats below the adapter's position, bad numbers and times, out-of-order sequences,
comments and CDATA), and must leave the same observations queued, the same position and the same
counts, or the one-pass read must decline the page. Pages with asset changes are read both ways
against our agent serving the tools, so the same assets are read (or found in the cache) and the
same tool lives come out in the same places.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from adapters.mtconnect.agent import MtConnectAgent
from adapters.mtconnect.client import AgentClient, MtConnectAdapter, _Restarted
from adapters.mtconnect.documents import CuttingToolAsset, Life
from adapters.mtconnect.mapping import resolve
from adapters.mtconnect.parser import parse_devices, parse_document
from adapters.mtconnect.render import AgentInfo, render_devices
from monitor.errors import BadDocument
from monitor.model import Observation
from tests.mtconnect._devices import vmc
from tests.mtconnect.test_client import SIGNALS, machine

_PROBE = parse_devices(render_devices(AgentInfo(1, 1000, 10, 0, "2024-01-01T00:00:00Z"), [vmc()]))
_BINDINGS = resolve(_PROBE, "vmc", machine("http://127.0.0.1:1", streaming=True).signals)
_NS = "urn:mtconnect.org:MTConnectStreams:2.7"


_TOOL_SIGNALS = {**SIGNALS, "probe.tool_parts": {"type": "ASSET_CHANGED", "key": "PART_COUNT"}}
"""The asset change bound twice: a tool's minutes and (under a name the config accepts) its part count."""


def _adapter(next_sequence: int | None, bindings: list[Any] = _BINDINGS) -> MtConnectAdapter:
    adapter = MtConnectAdapter(machine("http://127.0.0.1:1", streaming=True), queue_size=100_000)
    adapter._bind(bindings)
    adapter.instance_id = 1
    adapter.next_sequence = next_sequence
    return adapter


async def _general(adapter: MtConnectAdapter, page: bytes) -> list[Observation]:
    """What ``_stream`` does with a page that is not read in one pass."""
    doc = parse_document(page, only=adapter._only)
    assert not isinstance(doc, BaseException)
    await adapter._handle(None, doc, "test")  # type: ignore[arg-type]  # the client is only for asset reads
    return adapter._queue.take()


async def _one_pass(adapter: MtConnectAdapter, page: bytes) -> list[Observation] | None:
    plain = adapter._plain_page(page)
    if plain is None:
        return None
    await adapter._handle_plain(plain)
    return adapter._queue.take()


def _compare(page: bytes, next_sequence: int | None) -> bool:
    """Both paths on ``page``; True when the one-pass read took it."""
    return asyncio.run(_compare_on(_adapter(next_sequence), _adapter(next_sequence), page))


async def _compare_on(fast: MtConnectAdapter, slow: MtConnectAdapter, page: bytes) -> bool:
    """``page`` read in one pass by ``fast`` (or declined, then read the general way) and the general way
    by ``slow``: the same observations, position and counts; True when the one-pass read took it."""

    async def run() -> bool:
        restarted = False
        try:
            got = await _one_pass(fast, page)
        except _Restarted:
            got, restarted = None, True
        if got is None and not restarted:
            with contextlib.suppress(BadDocument, ValueError, TypeError, _Restarted):
                await _general(fast, page)  # declined: the stream reads it the general way
        try:
            want = await _general(slow, page)
        except (BadDocument, ValueError, TypeError):
            assert got is None and not restarted, "the one-pass read took a page the general path refuses"
            return False
        except _Restarted:
            assert got is None, "the one-pass read missed an agent restart"
            return restarted
        assert not restarted, "the one-pass read saw an agent restart the general path did not"
        if got is None:
            return False
        assert got == want
        assert fast.next_sequence == slow.next_sequence
        assert fast.stats.as_dict() == slow.stats.as_dict()
        return True

    return await run()


_ITEMS = {
    # data item id -> (group, element)
    "vmc_load": ("Samples", "Load"),
    "vmc_speed": ("Samples", "RotaryVelocity"),
    "vmc_pc": ("Events", "PartCount"),
    "vmc_prog": ("Events", "Program"),
    "vmc_exec": ("Events", "Execution"),
    "vmc_hole1_x": ("Events", "MeasurementValue"),
    "vmc_vars": ("Events", "VariableDataSet"),
    "vmc_asset_chg": ("Events", "AssetChanged"),
    "vmc_system": ("Condition", "Normal"),
    "vmc_avail": ("Events", "Availability"),
    "unmapped": ("Samples", "Position"),
}
_TEXTS = ["12.5", "7", " 7 ", "UNAVAILABLE", "", "nan", "inf", "1e309", "AUTOMATIC", "O1234", "x"]
_STAMPS = [
    "2024-01-01T00:00:00.123456Z",
    "2024-01-01T00:00:01Z",
    "2024-01-01T00:00:02.1234567Z",
    "2024-01-01T00:00:03",
    "2024-01-01T02:00:04+02:00",
    "garbage",
]
_OBS = st.fixed_dictionaries(
    {
        "item": st.sampled_from(sorted(_ITEMS)),
        "text": st.sampled_from(_TEXTS),
        "stamp": st.one_of(st.sampled_from(_STAMPS), st.none()),
        "step": st.one_of(st.integers(0, 3), st.integers(-3, -1), st.none()),
        "extra": st.sampled_from(["", "", "", "comment", "cdata", "entry", "vendor", "condition", "no-id", "badseq"]),
    }
)


def _page(obs: list[dict[str, Any]], ns: str | None, instance: str, start: int, groups_mixed: bool) -> bytes:
    q = f"{{{ns}}}" if ns else ""
    root = etree.Element(q + "MTConnectStreams", nsmap={None: ns} if ns else None)
    etree.SubElement(root, q + "Header", instanceId=instance, nextSequence=str(start + 2 * len(obs) + 1))
    streams = etree.SubElement(root, q + "Streams")
    device = etree.SubElement(streams, q + "DeviceStream", name="vmc")
    component = etree.SubElement(device, q + "ComponentStream", componentId="vmc_c")
    groups: dict[str, Any] = {}
    seq = start
    for o in obs:
        group_name, element = _ITEMS[o["item"]]
        if o["extra"] == "condition":
            group_name, element = "Condition", "Fault"
        key = group_name if not groups_mixed else f"{group_name}{len(groups)}"
        box = groups.get(key)
        if box is None:
            box = groups[key] = etree.SubElement(component, q + group_name)
        tag = "{urn:vendor}Motion" if o["extra"] == "vendor" else q + element
        el = etree.SubElement(box, tag)
        if o["extra"] != "no-id":
            el.set("dataItemId", o["item"])
        seq = seq + o["step"] if o["step"] is not None else seq
        if o["extra"] == "badseq":
            el.set("sequence", "x")
        elif o["step"] is not None:
            el.set("sequence", str(seq))
        if o["stamp"] is not None:
            el.set("timestamp", o["stamp"])
        el.text = o["text"]
        if o["extra"] == "comment":
            el.append(etree.Comment("c"))
            el[-1].tail = "5"
        elif o["extra"] == "cdata":
            el.text = etree.CDATA(o["text"] or "1")
        elif o["extra"] == "entry":
            entry = etree.SubElement(el, q + "Entry", key="501")
            entry.text = "2.5"
    page: bytes = etree.tostring(root)
    return page


@settings(max_examples=300, deadline=None)
@given(
    obs=st.lists(_OBS, max_size=12),
    ns=st.sampled_from([_NS, "urn:mtconnect.org:MTConnectStreams:1.3", None]),
    instance=st.sampled_from(["1", "1", "1", "2"]),
    start=st.integers(1, 30),
    floor=st.one_of(st.none(), st.integers(1, 40)),
    groups_mixed=st.booleans(),
)
def test_the_one_pass_read_gives_what_the_general_path_gives(
    obs: list[dict[str, Any]], ns: str | None, instance: str, start: int, floor: int | None, groups_mixed: bool
) -> None:
    _compare(_page(obs, ns, instance, start, groups_mixed), floor)


def test_a_common_page_is_read_in_one_pass_with_repeats_dropped() -> None:
    """The page every streaming agent sends most (loads, speeds, counters, programs, a probe result,
    UNAVAILABLE and NaN), with its first two observations below the adapter's position."""
    obs = [
        {"item": item, "text": text, "stamp": "2024-01-01T00:00:00.5Z", "step": 1, "extra": ""}
        for item, text in [
            ("vmc_load", "12.5"),
            ("vmc_load", "13"),
            ("vmc_speed", "UNAVAILABLE"),
            ("vmc_prog", "O1234"),
            ("vmc_exec", "ACTIVE"),
            ("vmc_pc", "7"),
            ("vmc_hole1_x", "25.0031"),
            ("vmc_load", "nan"),
            ("unmapped", "1.0"),
        ]
    ]
    page = _page(obs, _NS, "1", 10, False)
    assert _compare(page, 13)
    adapter = _adapter(13)
    plain = adapter._plain_page(page)
    assert plain is not None and plain.dropped == 2 and plain.last == 18  # the unmapped item is not counted
    assert [(o.signal, o.value, o.source_seq) for o in plain.observations] == [
        ("spindle.speed", None, 13),
        ("program.name", "O1234", 14),
        ("execution", "ACTIVE", 15),
        ("part.count", 7.0, 16),
        ("probe.hole1_x", 25.0031, 17),
        ("spindle.load", None, 18),
    ]


def test_a_probe_result_that_is_no_number_is_passed_on_as_written() -> None:
    """NaN from a probe is the macro's garbage, not UNAVAILABLE: kept (one ``math.nan`` object, so both
    paths and a repeat compare equal) for the tracker to count and note; infinity, out-of-range and
    text likewise; a load's NaN stays UNAVAILABLE. Both paths read the page alike."""
    texts = ["nan", "NaN", "INF", "-1e400", "ERR", "UNAVAILABLE", "25.0031"]
    obs = [
        {"item": item, "text": text, "stamp": "2024-01-01T00:00:00.5Z", "step": 1, "extra": ""}
        for item, text in [*(("vmc_hole1_x", t) for t in texts), ("vmc_load", "nan")]
    ]
    page = _page(obs, _NS, "1", 1, False)
    assert _compare(page, 1)
    plain = _adapter(1)._plain_page(page)
    assert plain is not None
    values = [o.value for o in plain.observations]
    assert values[0] is math.nan and values[1] is math.nan
    assert values[2:] == [math.inf, -math.inf, "ERR", None, 25.0031, None]


def test_pages_of_other_shapes_take_the_general_path() -> None:
    """A set, a condition of a mapped item or an asset change with elements in it sends the page the general way, and
    so does anything that is no clean Streams document; nothing is half read."""
    base = {"text": "1", "stamp": "2024-01-01T00:00:00Z", "step": 1, "extra": ""}
    adapter = _adapter(None)
    for other in ({"item": "vmc_vars"}, {"item": "vmc_load", "extra": "condition"}, {"item": "vmc_asset_chg", "extra": "entry"}):
        page = _page([{**base, "item": "vmc_load"}, {**base, **other}], _NS, "1", 1, False)
        assert adapter._plain_page(page) is None, other
    for bad in (b"", b"<MTConnectError/>", b"<MTConnectStreams><x:Load/></MTConnectStreams>"):
        with contextlib.suppress(BadDocument):
            assert adapter._plain_page(bad) is None
    assert adapter._queue.qsize() == 0 and adapter.next_sequence is None


_TOOLS = (
    CuttingToolAsset("T1", "T1", tool_life=(Life("MINUTES", "UP", 17.5), Life("PART_COUNT", "UP", 3.0))),
    CuttingToolAsset("T2", "T2", tool_life=(Life("MINUTES", "DOWN", None),)),  # a counter without a value
    CuttingToolAsset("T3", "T3", tool_life=(Life("PART_COUNT", "UP", 40.0),)),  # no minutes
)
_ASSET_OBS = st.fixed_dictionaries(
    {
        "item": st.sampled_from(["vmc_asset_chg", "vmc_asset_chg", "vmc_asset_chg", "vmc_load", "vmc_pc", "unmapped"]),
        "text": st.sampled_from(["T1", "T2", "T3", "T9", "UNAVAILABLE", "", "12.5"]),  # T9: not on the agent
        "stamp": st.one_of(st.sampled_from(_STAMPS[:3]), st.sampled_from(_STAMPS)),
        "step": st.one_of(st.integers(0, 3), st.integers(-3, -1), st.none()),
        "extra": st.sampled_from(["", "", "", "", "cdata", "vendor", "entry"]),
    }
)


@settings(max_examples=60, deadline=None)
@given(
    pages=st.lists(st.lists(_ASSET_OBS, max_size=8), min_size=1, max_size=3),
    start=st.integers(1, 30),
    floor=st.one_of(st.none(), st.integers(1, 40)),
    groups_mixed=st.booleans(),
    twice=st.booleans(),
)
def test_pages_with_asset_changes_read_in_one_pass_give_the_same_tool_lives(
    pages: list[list[dict[str, Any]]], start: int, floor: int | None, groups_mixed: bool, twice: bool
) -> None:
    """Pages in a row (the cache remembers what was read; ``twice`` sends each page again, as a repeat)
    read both ways against a real agent: same asset reads, cache hits, failures and tool lives."""
    bindings = resolve(_PROBE, "vmc", machine("http://127.0.0.1:1", streaming=True, signals=_TOOL_SIGNALS).signals)

    async def run() -> None:
        async with MtConnectAgent([vmc()]) as agent, aiohttp.ClientSession() as session:
            for tool in _TOOLS:
                agent.add_cutting_tool("vmc", tool)
            fast, slow = _adapter(floor, bindings), _adapter(floor, bindings)
            fast._client = slow._client = AgentClient(agent.url, session)
            at = start
            for obs in pages:
                page = _page(obs, _NS, "1", at, groups_mixed)
                for _ in range(1 + twice):
                    await _compare_on(fast, slow, page)
                at += 2 * len(obs) + 1

    asyncio.run(run())


def test_an_asset_change_is_read_in_one_pass_with_its_tool_lives_in_place() -> None:
    """The page of a tool change: its lives (minutes and part count) come between the observations
    around it, a repeat below the adapter's position is read but not told again, and a tool the
    agent does not know gives no life but a counted read."""
    bindings = resolve(_PROBE, "vmc", machine("http://127.0.0.1:1", streaming=True, signals=_TOOL_SIGNALS).signals)
    stamp = "2024-01-01T00:00:00.5Z"
    obs = [
        {"item": item, "text": text, "stamp": stamp, "step": 1, "extra": ""}
        for item, text in [
            ("vmc_asset_chg", "T3"),
            ("vmc_load", "12.5"),
            ("vmc_asset_chg", "T1"),
            ("vmc_pc", "7"),
            ("vmc_asset_chg", "T9"),
        ]
    ]
    page = _page(obs, _NS, "1", 10, False)

    async def run() -> list[tuple[str, object, int | None]]:
        async with MtConnectAgent([vmc()]) as agent, aiohttp.ClientSession() as session:
            for tool in _TOOLS:
                agent.add_cutting_tool("vmc", tool)
            fast, slow = _adapter(12, bindings), _adapter(12, bindings)
            fast._client = slow._client = AgentClient(agent.url, session)
            assert await _compare_on(fast, slow, page)
            assert fast.stats.counts["asset_reads"] == 3 and fast.stats.counts["duplicates_dropped"] == 1
            got = await _one_pass(_adapter(12, bindings), page)  # no client: no read, no life
            assert got is not None and [o.signal for o in got] == ["spindle.load", "part.count"]
            fast.next_sequence = 12
            again = await _one_pass(fast, page)
            assert again is not None and fast.stats.counts["asset_reads"] == 3  # every change already read
            return [(o.signal, o.value, o.source_seq) for o in again]

    assert asyncio.run(run()) == [
        ("spindle.load", 12.5, 12),
        ("tool.life", 17.5, 13),
        ("probe.tool_parts", 3.0, 13),
        ("part.count", 7.0, 14),
    ]
