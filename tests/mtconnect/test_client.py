"""The client adapter against our agent over real HTTP: polling, streaming, restarts, overruns, stalls, garbage."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.base import AdapterState
from adapters.mtconnect.agent import MtConnectAgent
from adapters.mtconnect.client import MtConnectAdapter, iter_multipart
from adapters.mtconnect.documents import CuttingToolAsset, Life
from monitor.config import MtConnectMachine
from monitor.model import CONNECTION_SIGNAL, GAP_SIGNAL, Observation
from tests.mtconnect._devices import vmc

SIGNALS: dict[str, Any] = {
    "spindle.load": {"type": "LOAD", "component": "C"},
    "spindle.speed": {"name": "Srpm"},
    "part.count": "vmc_pc",
    "program.name": "program",
    "execution": {"type": "EXECUTION"},
    "probe.hole1_x": {"type": "MEASUREMENT_VALUE", "name": "hole1_x"},
    "probe.hole1_y": {"id": "vmc_vars", "key": "501"},
    "tool.life": {"type": "ASSET_CHANGED", "key": "MINUTES"},
}


def machine(url: str, *, streaming: bool, signals: dict[str, Any] | None = None, **source: Any) -> MtConnectMachine:
    src = {
        "type": "mtconnect",
        "url": url,
        "device": "vmc",
        "streaming": streaming,
        "interval_ms": 0,
        "heartbeat_ms": 200,
        "reconnect_min_s": 0.02,
        "reconnect_max_s": 0.1,
        "count": 1000,
        **source,
    }
    return MtConnectMachine.model_validate({"id": "vmc-01", "source": src, "signals": signals or SIGNALS})


async def collect(
    adapter: MtConnectAdapter, until: Callable[[list[Observation]], bool], limit_s: float = 10.0
) -> list[Observation]:
    """Read observations until ``until(seen)`` holds (polling a condition with a timeout, no sleeps)."""
    seen: list[Observation] = []

    async def read() -> None:
        async for obs in adapter.observations():
            seen.append(obs)
            if until(seen):
                return

    await asyncio.wait_for(read(), limit_s)
    return seen


def values(seen: list[Observation], signal: str) -> list[Any]:
    return [o.value for o in seen if o.signal == signal]


def has(signal: str, value: Any) -> Callable[[list[Observation]], bool]:
    return lambda seen: any(o.signal == signal and o.value == value for o in seen)


@pytest.mark.parametrize(
    ("streaming", "multipart"),
    [(False, "x-mixed-replace"), (True, "x-mixed-replace"), (True, "mixed")],
    ids=["polling", "streaming-1.x", "streaming-2.x-chunked-mixed"],
)
async def test_probe_current_sample_loop(streaming: bool, multipart: str) -> None:
    t0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    async with MtConnectAgent([vmc()], multipart=multipart) as agent:
        agent.publish("vmc", "program", "1234", t0)
        agent.publish("vmc", "vmc_exec", "ACTIVE", t0)
        # streaming also parses every document in a worker thread (the path large pages take)
        extra: dict[str, Any] = {"parse_in_thread_bytes": 0} if streaming else {}
        async with MtConnectAdapter(machine(agent.url, streaming=streaming, **extra)) as adapter:
            first = await collect(adapter, has("execution", "ACTIVE"))
            assert adapter.state is AdapterState.CONNECTED
            assert values(first, "program.name") == ["1234"]  # text signal stays text
            assert values(first, "part.count") == [None]  # UNAVAILABLE, never 0
            for i in range(1, 6):
                t = t0 + timedelta(seconds=i)
                agent.publish("vmc", "Sload", 10.0 + i, t)
                agent.publish("vmc", "vmc_speed", 1000.0 * i, t)
                agent.publish("vmc", "vmc_pc", float(i), t)
            agent.publish("vmc", "hole1_x", 25.003, t0 + timedelta(seconds=7))
            agent.publish("vmc", "macros", {"500": "1.5", "501": "40.002"}, t0 + timedelta(seconds=8))
            agent.add_cutting_tool("vmc", CuttingToolAsset("T12.1", "T12", tool_life=(Life("MINUTES", "UP", 17.5),)))
            seen = await collect(adapter, lambda s: has("tool.life", 17.5)(s) and len(values(s, "part.count")) >= 5)
    assert values(seen, "part.count") == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert values(seen, "spindle.load") == [11.0, 12.0, 13.0, 14.0, 15.0]
    assert values(seen, "spindle.speed")[-1] == 5000.0
    assert values(seen, "probe.hole1_x") == [25.003]
    assert values(seen, "probe.hole1_y") == [40.002]
    loads = [o for o in seen if o.signal == "spindle.load"]
    assert loads[0].time == t0 + timedelta(seconds=1)  # the document timestamp, in UTC
    seqs = [o.source_seq for o in seen if o.source_seq is not None]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))  # in order, once each


async def test_agent_restart_mid_batch_reports_gap_without_duplicates() -> None:
    async with MtConnectAgent([vmc()]) as agent, MtConnectAdapter(machine(agent.url, streaming=True)) as adapter:
        await collect(adapter, has(CONNECTION_SIGNAL, "connected"))
        for i in range(1, 6):
            agent.publish("vmc", "vmc_pc", float(i))
        seen = await collect(adapter, has("part.count", 5.0))
        agent.restart()
        for i in range(6, 11):
            agent.publish("vmc", "vmc_pc", float(i))
        seen += await collect(adapter, has("part.count", 10.0))
        assert adapter.stats.counts["agent_restarts"] == 1
    counts = [v for v in values(seen, "part.count") if v is not None]
    assert counts == [float(i) for i in range(1, 11)]  # none lost, none twice
    gaps = [i for i, o in enumerate(seen) if o.signal == GAP_SIGNAL]
    assert len(gaps) == 1 and "restarted" in str(seen[gaps[0]].value)
    pos5 = next(i for i, o in enumerate(seen) if o.value == 5.0 and o.signal == "part.count")
    pos6 = next(i for i, o in enumerate(seen) if o.value == 6.0 and o.signal == "part.count")
    assert pos5 < gaps[0] < pos6


@pytest.mark.parametrize("streaming", [False, True], ids=["polling", "streaming"])
async def test_tiny_buffer_slow_client_out_of_range_recovers_with_gap(streaming: bool) -> None:
    async with MtConnectAgent([vmc()], buffer_size=40) as agent:
        cfg = machine(agent.url, streaming=streaming, count=5)
        async with MtConnectAdapter(cfg, queue_size=2) as adapter:
            await collect(adapter, has(CONNECTION_SIGNAL, "connected"))
            agent.publish("vmc", "vmc_pc", 1.0)
            await collect(adapter, has("part.count", 1.0))
            # the consumer stops reading: the adapter blocks on its full queue while the agent moves on
            for i in range(2, 200):
                agent.publish("vmc", "vmc_pc", float(i))
            seen = await collect(adapter, has("part.count", 199.0))
            assert adapter.stats.counts["out_of_range"] >= 1
    assert any(o.signal == GAP_SIGNAL and "overrun" in str(o.value) for o in seen)
    counts = [v for v in values(seen, "part.count") if v is not None]
    assert counts == sorted(counts) and len(counts) == len(set(counts)) and counts[-1] == 199.0
    assert len(counts) < 198  # some were really lost, and said so with the gap


async def test_stalled_stream_reconnects() -> None:
    async with (
        MtConnectAgent([vmc()]) as agent,
        MtConnectAdapter(machine(agent.url, streaming=True, heartbeat_ms=100)) as adapter,
    ):
        await collect(adapter, has(CONNECTION_SIGNAL, "connected"))
        agent.stall(True)
        seen = await collect(adapter, has(CONNECTION_SIGNAL, "lost"))
        assert adapter.stats.counts["heartbeat_missed"] >= 1
        agent.stall(False)
        agent.publish("vmc", "vmc_pc", 42.0)
        seen += await collect(adapter, has("part.count", 42.0))
    assert values(seen, "part.count").count(42.0) == 1


BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    b"<MTConnectStreams><Header/><Streams>&b;</Streams></MTConnectStreams>"
)


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (b"Service temporarily unavailable \x00\xff", "malformed"),
        (BOMB, "DTD"),
        (b'<?xml version="1.0"?><MTConnectStreams xmlns="urn:mtconnect.org:MTConnectStreams:2.0"><Header ', "malformed"),
    ],
    ids=["garbage", "entity-bomb", "truncated"],
)
async def test_bad_documents_are_counted_and_adapter_keeps_going(
    bad: bytes, fragment: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A proxy in front of our agent answers the first /current requests with a bad body."""
    async with MtConnectAgent([vmc()]) as agent:
        bad_left = {"n": 2}
        session = aiohttp.ClientSession()

        async def proxy(request: web.Request) -> web.Response:
            if request.path.endswith("/current") and bad_left["n"] > 0:
                bad_left["n"] -= 1
                return web.Response(body=bad, content_type="text/xml")
            async with session.get(agent.url + request.path_qs) as r:
                return web.Response(body=await r.read(), status=r.status, content_type="text/xml")

        app = web.Application()
        app.router.add_get("/{tail:.*}", proxy)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            agent.publish("vmc", "vmc_pc", 7.0)
            async with MtConnectAdapter(machine(f"http://127.0.0.1:{port}", streaming=False)) as adapter:
                seen = await collect(adapter, has("part.count", 7.0))
                assert adapter.stats.counts["bad_document"] == 2
                agent.publish("vmc", "vmc_pc", 8.0)
                seen += await collect(adapter, has("part.count", 8.0))
        finally:
            await runner.cleanup()
            await session.close()
    assert values(seen, "part.count") == [7.0, 8.0]
    logged = [r.getMessage() for r in caplog.records if "bad_document" in r.getMessage()]
    assert len(logged) == 1 and fragment in logged[0] and f"127.0.0.1:{port}/current" in logged[0]


async def test_unresolvable_signal_names_the_problem(caplog: pytest.LogCaptureFixture) -> None:
    async with MtConnectAgent([vmc()]) as agent:
        cfg = machine(
            agent.url, streaming=False, signals={"spindle.load": {"type": "LOAD", "component": "Z"}, "tool.number": "nope"}
        )
        async with MtConnectAdapter(cfg) as adapter:
            await collect(adapter, has(CONNECTION_SIGNAL, "lost"))
            assert adapter.stats.counts["agent_error"] >= 1
    logged = [r.getMessage() for r in caplog.records if "agent_error" in r.getMessage()]
    assert len(logged) == 1 and "spindle.load" in logged[0] and "tool.number" in logged[0]
    assert "no data item" in logged[0]


async def test_resume_from_saved_position_after_monitor_restart() -> None:
    async with MtConnectAgent([vmc()]) as agent:
        agent.publish("vmc", "vmc_pc", 1.0)
        async with MtConnectAdapter(machine(agent.url, streaming=True)) as first:
            await collect(first, has("part.count", 1.0))
            saved = first.position()
        agent.publish("vmc", "vmc_pc", 2.0)  # published while the monitor was down
        agent.publish("vmc", "vmc_pc", 3.0)
        async with MtConnectAdapter(machine(agent.url, streaming=True), resume=saved) as second:
            seen = await collect(second, has("part.count", 3.0))
    assert values(seen, "part.count") == [2.0, 3.0]  # nothing twice, nothing lost
    assert not any(o.signal == GAP_SIGNAL for o in seen)


async def test_agent_refusing_streams_is_polled() -> None:
    async with (
        MtConnectAgent([vmc()], streaming=False) as agent,
        MtConnectAdapter(machine(agent.url, streaming=True)) as adapter,
    ):
        await collect(adapter, has(CONNECTION_SIGNAL, "connected"))
        agent.publish("vmc", "vmc_pc", 1.0)
        agent.publish("vmc", "vmc_pc", 2.0)
        seen = await collect(adapter, has("part.count", 2.0))
        assert adapter.stats.counts["streaming_refused"] == 1 and not adapter.streaming
    assert values(seen, "part.count") == [1.0, 2.0]


async def test_agent_process_replaced_on_same_port() -> None:
    """A real restart: the agent goes away (connections refused), a new one comes up on the same port."""
    first = MtConnectAgent([vmc()])
    await first.start()
    port = first.port
    try:
        async with MtConnectAdapter(machine(first.url, streaming=True)) as adapter:
            await collect(adapter, has(CONNECTION_SIGNAL, "connected"))
            first.publish("vmc", "vmc_pc", 1.0)
            seen = await collect(adapter, has("part.count", 1.0))
            await first.aclose()
            seen += await collect(adapter, has(CONNECTION_SIGNAL, "lost"))
            async with MtConnectAgent([vmc()], port=port) as second:
                assert second.instance_id != first.instance_id
                second.publish("vmc", "vmc_pc", 2.0)
                seen += await collect(adapter, has("part.count", 2.0))
            assert adapter.stats.counts["agent_restarts"] == 1
    finally:
        await first.aclose()
    assert [v for v in values(seen, "part.count") if v is not None] == [1.0, 2.0]
    assert [o.value for o in seen if o.signal == GAP_SIGNAL and "restarted" in str(o.value)]


async def test_an_asset_is_read_again_only_when_the_agent_announces_a_new_change() -> None:
    async with MtConnectAgent([vmc()], buffer_size=40) as agent:
        cfg = machine(agent.url, streaming=False, count=5)
        async with MtConnectAdapter(cfg, queue_size=2) as adapter:
            await collect(adapter, has(CONNECTION_SIGNAL, "connected"))
            agent.add_cutting_tool("vmc", CuttingToolAsset("T12.1", "T12", tool_life=(Life("MINUTES", "UP", 17.5),)))
            await collect(adapter, has("tool.life", 17.5))
            assert adapter.stats.counts["asset_reads"] == 1
            # the consumer stops reading while the agent moves on past our position: the adapter
            # resynchronises from /current, which repeats the tool's ASSET_CHANGED (same change)
            for i in range(1, 200):
                agent.publish("vmc", "vmc_pc", float(i))
            seen = await collect(adapter, has("part.count", 199.0))
            assert adapter.stats.counts["out_of_range"] >= 1
            assert values(seen, "tool.life") == [17.5]  # the current value, told again from what was read
            assert adapter.stats.counts["asset_reads"] == 1 and adapter.stats.counts["asset_reads_saved"] >= 1
            agent.add_cutting_tool("vmc", CuttingToolAsset("T12.1", "T12", tool_life=(Life("MINUTES", "UP", 18.0),)))
            await collect(adapter, has("tool.life", 18.0))
            assert adapter.stats.counts["asset_reads"] == 2


class _Relay:
    """A TCP relay in front of an agent that keeps what each connection asked and can close one, as an
    agent (or anything between) that drops an idle connection does."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.asked: list[bytearray] = []
        self._writers: list[list[asyncio.StreamWriter]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> _Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for i in range(len(self._writers)):
            self.close(i)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def carrying(self, request: bytes) -> list[int]:
        """The connections that carried ``request`` (by index)."""
        return [i for i, asked in enumerate(self.asked) if request in asked]

    def close(self, i: int) -> None:
        for writer in self._writers[i]:
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        asked = bytearray()
        self.asked.append(asked)
        self._writers.append([writer, up_writer])
        await asyncio.gather(self._pipe(reader, up_writer, asked), self._pipe(up_reader, writer, None), return_exceptions=True)
        writer.close()
        up_writer.close()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bytearray | None) -> None:
        try:
            while data := await src.read(65536):
                if keep is not None:
                    keep += data
                dst.write(data)
                await dst.drain()
        finally:
            dst.close()


async def test_asset_reads_keep_their_connection_and_survive_the_agent_closing_it() -> None:
    """A tool change's asset read goes over the connection of the one before (a new connection per
    read cost more CPU than the read); when the agent has closed that connection meanwhile, the read
    is made on a new one and no tool life is lost."""
    tool = "T12.1"
    async with (
        MtConnectAgent([vmc()]) as agent,
        _Relay(agent.port) as relay,
        MtConnectAdapter(machine(relay.url, streaming=True)) as adapter,
    ):
        await collect(adapter, has(CONNECTION_SIGNAL, "connected"))
        for life in (17.5, 18.0):
            agent.add_cutting_tool("vmc", CuttingToolAsset(tool, "T12", tool_life=(Life("MINUTES", "UP", life),)))
            await collect(adapter, has("tool.life", life))
        kept = relay.carrying(b"GET /asset/")
        assert len(kept) == 1 and relay.asked[kept[0]].count(b"GET /asset/") == 2
        relay.close(kept[0])  # the agent's idle timeout
        agent.add_cutting_tool("vmc", CuttingToolAsset(tool, "T12", tool_life=(Life("MINUTES", "UP", 19.0),)))
        await collect(adapter, has("tool.life", 19.0))
        assert len(relay.carrying(b"GET /asset/")) == 2
        assert adapter.stats.counts["asset_reads"] == 3 and "asset_read_failed" not in adapter.stats.counts


def _part(body: bytes) -> bytes:
    return b"--B\r\nContent-type: text/xml\r\nContent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body + b"\r\n"


async def test_each_part_has_its_time_limit_but_a_part_held_by_the_reader_has_none() -> None:
    """iter_multipart bounds the reading of each part (boundary to last byte), not the time the
    consumer keeps a part (parsing, or waiting for room downstream); a part that does not complete
    in time ends the stream with TimeoutError, and a cancellation from outside stays a cancellation."""
    writes: asyncio.Queue[bytes] = asyncio.Queue()

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace;boundary=B"})
        await resp.prepare(request)
        while chunk := await writes.get():
            await resp.write(chunk)
        return resp

    app = web.Application()
    app.router.add_get("/sample", stream)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    wait_s = 0.3
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/sample") as resp:
                parts = iter_multipart(resp.content, "B", wait_s)
                writes.put_nowait(_part(b"<one/>"))
                assert await anext(parts) == b"<one/>"
                await asyncio.sleep(3 * wait_s)  # the consumer holds the part for three limits
                writes.put_nowait(_part(b"<two/>"))
                assert await anext(parts) == b"<two/>"
                writes.put_nowait(b"--B\r\nContent-type: text/xml\r\nContent-length: 10\r\n\r\n<thr")  # never completes
                started = loop.time()
                with pytest.raises(TimeoutError):
                    await anext(parts)
                assert loop.time() - started >= wait_s
            async with session.get(f"http://127.0.0.1:{port}/sample") as resp:
                quiet = iter_multipart(resp.content, "B", 60.0)

                async def first() -> bytes:
                    return await anext(quiet)

                reader = asyncio.create_task(first())
                await asyncio.sleep(0)
                reader.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await reader
                assert reader.cancelled()
                await quiet.aclose()
    finally:
        writes.put_nowait(b"")
        writes.put_nowait(b"")
        await runner.cleanup()


class _ArrivingInPieces(aiohttp.StreamReader):
    """aiohttp's stream reader, given the next piece of the stream each time its reader has read
    everything that came (as a connection delivers what the network cut): one piece per read."""

    def __init__(self, pieces: list[bytes], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(BaseProtocol(loop), 2**16, loop=loop)
        self._pieces = [p for p in pieces if p]

    async def readany(self) -> bytes:
        if not self._buffer:
            if self._pieces:
                self.feed_data(self._pieces.pop(0))
            else:
                self.feed_eof()
        return await super().readany()


_BODIES = st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"--B", b"-B")), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(
    bodies=_BODIES,
    newline=st.sampled_from([b"\r\n", b"\n"]),
    extra=st.booleans(),
    closing=st.booleans(),
    cuts=st.lists(st.integers(1, 400), max_size=30),
)
def test_parts_come_out_whole_however_the_stream_is_cut(
    bodies: list[bytes], newline: bytes, extra: bool, closing: bool, cuts: list[int]
) -> None:
    """The same bodies, in order, whether the stream arrives in one piece or cut anywhere (inside a
    boundary, a header, a line ending, a body; several parts in one piece), with CRLF or bare LF
    lines, blank lines and other headers between parts, and a closing boundary or just the end."""
    n = newline
    stream = b""
    for i, body in enumerate(bodies):
        head = [b"--B", b"Content-type: text/xml"] + ([b"X-Other: 1"] if extra and i % 2 else [])
        head.append(b"CONTENT-LENGTH: " + str(len(body)).encode())
        stream += (n if extra else b"") + n.join(head) + n + n + body + n
    if closing:
        stream += b"--B--" + n
    pieces, at = [], 0
    for cut in cuts:
        if at >= len(stream):
            break
        pieces.append(stream[at : at + cut])
        at += cut
    pieces.append(stream[at:])

    async def run() -> list[bytes]:
        loop = asyncio.get_running_loop()
        content = _ArrivingInPieces(pieces, loop)
        return [body async for body in iter_multipart(content, "B", 30.0)]

    assert asyncio.run(run()) == bodies
