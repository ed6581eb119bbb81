"""The MTConnect client adapter: one agent device in, canonical observations out.

The protocol as real agents behave:

1. ``/probe`` gives the device model; the configured signals are bound to data items
   (:mod:`adapters.mtconnect.mapping`).
2. ``/current`` gives every item's latest value, ``nextSequence`` and ``instanceId``; the bound
   values are emitted once.
3. ``/sample?from=<next>&interval=..&heartbeat=..`` streams multipart parts (split by boundary and
   Content-length). Agents that answer a plain document instead are polled with ``/sample``.

Sequence discipline: observations are emitted in sequence order exactly once (``_next`` only moves
forward; anything below it is a replay and is dropped). An ``instanceId`` change means the agent
restarted: re-probe, re-read, report a gap, and read the new buffer from its start when it has not
wrapped, so nothing published since the restart is lost. ``OUT_OF_RANGE`` means we fell behind the
agent's buffer: resynchronise from ``/current`` and report the lost sequence range as a gap. A
stream that misses its heartbeat is dead: reconnect. A malformed document is counted, logged once
with the URL and its first bytes, and the adapter resynchronises. Documents larger than
``parse_in_thread_bytes`` are parsed in a worker thread so the event loop never stalls; smaller
streamed pages of the common shape (plain values of mapped items, tool changes) are read from a tree
straight into canonical observations, the rest through the parser's documents.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from adapters.base import Adapter, AdapterState, SourceSpec
from adapters.mtconnect.buffer import ConditionState, apply_condition
from adapters.mtconnect.config import MtConnectAddress, MtConnectSource
from adapters.mtconnect.documents import (
    AssetsDocument,
    CuttingToolAsset,
    DevicesDocument,
    Document,
    ErrorDocument,
    Header,
    Life,
    MtcObservation,
    StreamsDocument,
    parse_time,
)
from adapters.mtconnect.mapping import Binding, condition_level, convert, resolve, select_devices
from adapters.mtconnect.parser import parse_document, streams_tree
from monitor.errors import AdapterError, BadDocument, ConnectError
from monitor.model import Observation, new_observation
from monitor.retry import Backoff, Retry

__all__ = ["AgentClient", "MtConnectAdapter", "iter_multipart", "read_capped"]

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
_ASSET_CACHE = 256
"""Assets whose last read version is remembered (a tool magazine holds far fewer)."""
_MAX_PART_HEADERS = 64
_KEEPALIVE_S = 60.0
"""How long the connection of an asset read stays open for the next read. aiohttp's 15 s is shorter than
the time between a machine's tool changes, and a new connection per read cost more CPU than the read.
An agent that closes it sooner (its own idle timeout) costs nothing: aiohttp sends a GET that finds
its kept connection closed again on a new one. A minute stays below the idle timeouts of firewalls and
load balancers (minutes to hours), which drop a connection without a word."""


class _Restarted(Exception):
    """The agent's instanceId changed under us."""


class _OutOfRange(AdapterError):
    """The agent no longer holds the sequence we asked for."""


class _StreamEnded(Exception):
    """The agent closed the stream or missed its heartbeat."""


@dataclass(frozen=True, slots=True)
class _Page:
    doc: Document
    url: str


class AgentClient:
    """HTTP requests to one agent, each answer parsed (off the loop when large)."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        parse_in_thread_bytes: int = 64 * 1024,
        max_document_bytes: int = 64 * 1024 * 1024,
        request_timeout_s: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.parse_in_thread_bytes = parse_in_thread_bytes
        self.max_document_bytes = max_document_bytes
        self.request_timeout_s = request_timeout_s

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def parse(self, body: bytes, only: frozenset[str] | None = None) -> Document:
        """Parse one document; large ones in a worker thread."""
        if len(body) > self.parse_in_thread_bytes:
            return await asyncio.to_thread(parse_document, body, max_bytes=self.max_document_bytes, only=only)
        return parse_document(body, max_bytes=self.max_document_bytes, only=only)

    async def get(self, path: str, only: frozenset[str] | None = None, *, limit_s: float | None = None) -> _Page:
        """GET one document: the whole answer must arrive within ``limit_s`` and fit ``max_document_bytes``
        (read as a stream and refused as soon as it is too large, never read whole first)."""
        url = self.url(path)
        limit = self.request_timeout_s if limit_s is None else limit_s
        try:
            async with asyncio.timeout(limit), self.session.get(url, timeout=aiohttp.ClientTimeout(total=limit)) as resp:
                body = await read_capped(resp, self.max_document_bytes, url)
        except TimeoutError as exc:
            raise ConnectError(f"{url}: no complete answer within {limit:g} s; is the agent running and reachable?") from exc
        except (aiohttp.ClientError, HttpProcessingError, OSError) as exc:
            raise ConnectError(f"{url}: {_reason(exc)}; is the agent running and reachable?") from exc
        try:
            return _Page(await self.parse(body, only), url)
        except BadDocument as exc:
            raise BadDocument(f"{url} (HTTP {resp.status}): {exc}") from exc

    async def probe(self, device: str | None = None) -> DevicesDocument:
        page = await self.get(f"/{device}/probe" if device else "/probe")
        return _answer(page, DevicesDocument)

    async def current(self, only: frozenset[str] | None = None) -> StreamsDocument:
        page = await self.get("/current", only)
        return _answer(page, StreamsDocument)

    async def asset(self, asset_id: str) -> AssetsDocument | None:
        page = await self.get(f"/asset/{asset_id}")
        return page.doc if isinstance(page.doc, AssetsDocument) else None


_D = TypeVar("_D", bound=Document)


def _answer(page: _Page, kind: type[_D]) -> _D:
    """The page's document if it is a ``kind``; an agent's error answer or another kind raises."""
    doc = page.doc
    if isinstance(doc, ErrorDocument):
        if "OUT_OF_RANGE" in doc.codes:
            raise _OutOfRange("; ".join(f"{e.code}: {e.message}" for e in doc.errors))
        text = "; ".join(f"{e.code}: {e.message}" for e in doc.errors)
        raise AdapterError(f"{page.url}: agent answered {text}")
    if not isinstance(doc, kind):
        raise BadDocument(f"{page.url}: expected {kind.__name__}, got {type(doc).__name__}")
    return doc


async def read_capped(resp: aiohttp.ClientResponse, max_bytes: int, url: str) -> bytes:
    """The body of ``resp``, read chunk by chunk and refused (:class:`BadDocument`) as soon as it
    passes ``max_bytes``: a hostile or broken agent's endless answer costs at most that much memory."""
    declared = resp.content_length
    if declared is not None and declared > max_bytes:
        raise BadDocument(f"{url}: answer of {declared} bytes exceeds max_document_bytes ({max_bytes}); refused unread")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in resp.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise BadDocument(f"{url}: answer longer than max_document_bytes ({max_bytes}); refused at that size")
            chunks.append(chunk)
    except (HttpProcessingError, ValueError) as exc:  # a malformed chunked encoding or compressed body
        raise BadDocument(f"{url}: unreadable answer body ({_reason(exc)})") from exc
    return b"".join(chunks)


async def iter_multipart(
    content: aiohttp.StreamReader,
    boundary: str,
    part_wait_s: float,
    max_bytes: int = 64 * 1024 * 1024,
    *,
    where: str = "multipart stream",
) -> AsyncGenerator[bytes, None]:
    """Bodies of a ``multipart/x-mixed-replace`` (or chunked ``multipart/mixed``) stream.

    Parts are found by their boundary line and read by their Content-length. ``part_wait_s`` bounds
    the time for each whole part, boundary to last byte (heartbeats come at least that often), so an
    agent that trickles bytes, endless header lines or blank lines without ever completing a part
    raises :class:`TimeoutError` like a silent one. Lines are bounded as aiohttp's reader bounds them
    (:class:`LineTooLong`); anything malformed raises :class:`BadDocument` whose message starts with
    ``where`` (the stream's URL).
    """
    marker = b"--" + boundary.encode()
    clock = _PartClock(part_wait_s)
    reader = _PartReader(content)
    try:
        while True:
            clock.begin()
            try:
                body = await _next_part(reader, marker, max_bytes)
            except asyncio.CancelledError:
                if clock.timed_out():
                    raise TimeoutError(f"no complete part within {part_wait_s:g} s") from None
                raise
            except (HttpProcessingError, ValueError) as exc:  # e.g. LineTooLong: a line past aiohttp's bound
                raise BadDocument(f"{where}: multipart stream: {_reason(exc)[:200]}") from exc
            except BadDocument as exc:
                raise BadDocument(f"{where}: {exc}") from exc
            finally:
                clock.end()
            if body is None:
                return
            yield body
    finally:
        clock.close()


class _PartClock:
    """The time limit on each part of a stream, with one timer per stream instead of one per part.

    ``asyncio.timeout`` around every part put a timer into the loop's heap and took it out again,
    a hundred times a second in a cell, which cost more than reading the part. Here one timer checks
    now and then: it moves itself to the running part's deadline, and only when a part has been
    read for the whole limit does it cancel the reading task (as ``asyncio.timeout`` does, and told
    apart from any other cancellation the same way, by the task's cancellation count). While the
    consumer holds a part (parsing it, or waiting for room downstream) no limit runs.
    """

    __slots__ = ("_cancelling", "_expired", "_handle", "_loop", "_reading", "_started", "_task", "_wait")

    def __init__(self, wait_s: float) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a part clock runs inside a task")
        self._loop = asyncio.get_running_loop()
        self._task = task
        self._wait = wait_s
        self._cancelling = task.cancelling()
        self._started = self._loop.time()
        self._reading = False
        self._expired = False
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(self._started + wait_s, self._check)

    def begin(self) -> None:
        """A part is being read from now on."""
        self._started = self._loop.time()
        self._reading = True

    def end(self) -> None:
        """The part is read (or reading it failed)."""
        self._reading = False

    def timed_out(self) -> bool:
        """Whether a cancellation the reader caught is this clock's; call once, with it in hand."""
        return self._expired and self._task.uncancel() <= self._cancelling

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        now = self._loop.time()
        due = self._started + self._wait if self._reading else now + self._wait
        if now < due:
            self._handle = self._loop.call_at(due, self._check)
            return
        self._handle = None
        self._expired = True
        self._task.cancel()


_MAX_LINE = 2 * 2**16
"""The longest line of a part's head: what aiohttp's reader allows a line of a response body."""


class _PartReader:
    """Lines and bodies of a multipart stream from what arrived, a buffer at a time.

    aiohttp's ``readline`` is one coroutine per line and wakes the connection's flow control on
    every call (seven times for a part's boundary, headers and body): here the lines of a part that
    arrived whole are cut from one buffer without waiting, and the stream is only read (``readany``)
    when the buffer holds no whole line or body. Same lines and bodies, same end-of-stream answers
    (a last line without its newline, then ``b""``; :class:`asyncio.IncompleteReadError`), and a line
    longer than aiohttp's bound raises its :class:`LineTooLong`."""

    __slots__ = ("_buf", "_content", "_pos")

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self._content = content
        self._buf = b""
        self._pos = 0

    def line_nowait(self) -> bytes | None:
        """The next line (with its newline) if the buffer holds it whole, else None."""
        start = self._pos
        end = self._buf.find(b"\n", start)
        if end < 0:
            return None
        if end >= start + _MAX_LINE:
            raise LineTooLong(self._buf[start : start + 100] + b"...", _MAX_LINE)
        self._pos = end + 1
        return self._buf[start : end + 1]

    async def readline(self) -> bytes:
        line = self.line_nowait()
        while line is None:
            if len(self._buf) - self._pos > _MAX_LINE:
                raise LineTooLong(self._buf[self._pos : self._pos + 100] + b"...", _MAX_LINE)
            data = await self._content.readany()
            if not data:  # the stream ended: what is left, then b""
                line = self._buf[self._pos :]
                self._buf, self._pos = b"", 0
                return line
            self._buf = self._buf[self._pos :] + data
            self._pos = 0
            line = self.line_nowait()
        return line

    async def readexactly(self, n: int) -> bytes:
        start, buf = self._pos, self._buf
        if len(buf) - start >= n:
            if len(buf) - start == n:  # the usual end of what arrived: hold no copy of it
                self._buf, self._pos = b"", 0
            else:
                self._pos = start + n
            return buf[start : start + n]
        blocks = [self._buf[start:]]
        have = len(blocks[0])
        self._buf, self._pos = b"", 0
        while have < n:
            data = await self._content.readany()
            if not data:
                partial = b"".join(blocks)
                raise asyncio.IncompleteReadError(partial, n)
            blocks.append(data)
            have += len(data)
        whole = b"".join(blocks)
        self._buf = whole[n:]
        return whole[:n]


async def _next_part(reader: _PartReader, marker: bytes, max_bytes: int) -> bytes | None:
    """One part's body; None when the stream ended."""
    while True:
        line = reader.line_nowait()
        if line is None:
            line = await reader.readline()
        if not line:
            return None
        line = line.strip()
        if line:
            break
    if not line.startswith(marker):
        raise BadDocument(f"multipart stream: expected boundary, got {line[:60]!r}")
    if line.endswith(b"--"):
        return None
    length: int | None = None
    for _ in range(_MAX_PART_HEADERS):
        head = reader.line_nowait()
        if head is None:
            head = await reader.readline()
        if not head:
            return None
        head = head.strip()
        if not head:
            break
        name, _, value = head.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                length = int(value.strip())
            except ValueError as exc:
                raise BadDocument(f"multipart stream: bad Content-length {value[:20]!r}") from exc
    else:
        raise BadDocument(f"multipart stream: more than {_MAX_PART_HEADERS} header lines in one part")
    if length is None or length < 0 or length > max_bytes:
        raise BadDocument(f"multipart stream: part without a usable Content-length ({length}; limit {max_bytes})")
    return await reader.readexactly(length)


def _reason(exc: BaseException) -> str:
    """A readable reason even for exceptions whose text is empty (TimeoutError(), bare OSError)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class MtConnectAdapter(Adapter):
    """Reads one machine from an MTConnect agent (any version 1.1 - 2.x) into canonical observations."""

    type_name = "mtconnect"

    def __init__(
        self,
        machine: SourceSpec[MtConnectSource, MtConnectAddress],
        *,
        resume: Mapping[str, Any] | None = None,
        queue_size: int = 10_000,
    ) -> None:
        """``resume`` is a :meth:`position` saved before a restart: with the same agent instance and the
        sequence still in its buffer, reading continues there (no value twice, none lost)."""
        super().__init__(machine.id, queue_size=queue_size)
        self.config = machine
        self.source = machine.source
        self.instance_id: int | None = None
        self.next_sequence: int | None = None
        if resume:
            inst, nxt = resume.get("instance_id"), resume.get("next_sequence")
            if isinstance(inst, int) and isinstance(nxt, int):
                self.instance_id, self.next_sequence = inst, nxt
        self.bindings: list[Binding] = []
        self._by_item: dict[str, list[Binding]] = {}
        self._only: frozenset[str] = frozenset()
        self._asset_items: frozenset[str] = frozenset()
        self._plain: dict[str, Binding] = {}
        """Data items bound to one signal, whole value, no asset: the common case, converted inline."""
        self._asset_only: dict[str, tuple[Binding, ...]] = {}
        """Data items whose every signal reads the asset an ASSET_CHANGED names (a tool's life)."""
        self._conditions: dict[str, ConditionState] = {}
        self._sets: dict[str, dict[str, object]] = {}
        self._assets: dict[str, AssetsDocument | None] = {}
        self._asset_cache: dict[str, tuple[str, AssetsDocument | None]] = {}
        """Per asset id: the ASSET_CHANGED time of the version read, and what was read (bounded)."""
        self._client: AgentClient | None = None
        self._session: aiohttp.ClientSession | None = None
        self._rng = random.Random()
        self._retry = Retry(Backoff(initial_s=self.source.reconnect_min_s, max_s=self.source.reconnect_max_s), self._rng)
        self.streaming = self.source.streaming

    @property
    def failures(self) -> int:
        """Failed attempts in a row since data last flowed; the reconnect wait grows with it."""
        return self._retry.failures

    @property
    def delivery_period_s(self) -> float:
        return max(self.source.interval_ms, 50) / 1000

    def position(self) -> dict[str, int | None]:
        """Where reading stands (agent instanceId and next sequence), to save in the store."""
        return {"instance_id": self.instance_id, "next_sequence": self.next_sequence}

    def position_after(self, obs: Observation) -> dict[str, int | None] | None:
        """Resume just after ``obs``: its sequence + 1 in the current agent instance."""
        if obs.source_seq is None or self.instance_id is None:
            return None
        return {"instance_id": self.instance_id, "next_sequence": obs.source_seq + 1}

    # ------------------------------------------------------------ lifecycle

    async def _close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        try:
            await self._loop()
        finally:
            await self._close()

    async def _loop(self) -> None:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(keepalive_timeout=_KEEPALIVE_S))
        self._client = AgentClient(
            self.source.url,
            self._session,
            parse_in_thread_bytes=self.source.parse_in_thread_bytes,
            max_document_bytes=self.source.max_document_bytes,
            request_timeout_s=self.source.request_timeout_s,
        )
        retry = self._retry
        while True:
            try:
                await self._session_cycle(self._client)
            except _Restarted:
                wait = retry.failed()
                if retry.failures <= 2:
                    continue  # re-probe at once (the gap is reported by _synchronise); a flapping agent waits
            except _OutOfRange as exc:
                # /current on the next cycle finds our position gone and reports the lost range
                self.stats.count("out_of_range", message=f"{self.machine}: fell behind the agent buffer ({exc})")
                wait = retry.failed()
                if retry.failures <= 2:
                    continue  # resynchronise at once; an agent that keeps refusing gets the backoff
            except BadDocument as exc:
                self.stats.count("bad_document", message=f"{self.machine}: {exc}")
                wait = retry.failed()
            except ConnectError as exc:
                self.stats.count("connect_failed", message=f"{self.machine}: {exc}")
                wait = retry.failed()
            except _StreamEnded as exc:
                self.stats.count("stream_ended", message=f"{self.machine}: {exc}")
                wait = retry.failed()  # the shortest wait when the stream had delivered data (see _handle)
            except AdapterError as exc:  # the model does not fit the config, or the agent refused a request
                self.stats.count("agent_error", message=f"{self.machine}: {exc}")
                wait = retry.failed()
            await self._set_state(AdapterState.LOST, "reconnecting")
            self.stats.count("reconnects")
            await asyncio.sleep(wait)

    # ------------------------------------------------------------ one connection

    async def _session_cycle(self, client: AgentClient) -> None:
        probe = await client.probe()
        self._bind(resolve(probe, self.source.device, self.config.signals))
        devices = select_devices(probe, self.source.device)
        if not devices:
            raise AdapterError(f"{self.machine}: the agent at {self.source.url} serves no device")
        await self._synchronise(client)
        await self._set_state(AdapterState.CONNECTED, self.source.url)
        if self.streaming:
            await self._stream(client)
        else:
            await self._poll(client)

    def _bind(self, bindings: list[Binding]) -> None:
        """Use these bindings from now on (after each /probe): by data item, what to parse, which
        items announce asset changes, and which carry plain values (text or numbers, no keys)."""
        self.bindings = bindings
        self._by_item = {}
        for b in bindings:
            self._by_item.setdefault(b.item.id, []).append(b)
        self._only = frozenset(self._by_item)
        self._asset_items = frozenset(i for i, bs in self._by_item.items() if any(b.reads_asset for b in bs))
        self._asset_only = {i: tuple(bs) for i, bs in self._by_item.items() if all(b.reads_asset for b in bs)}
        self._plain = {
            i: bs[0] for i, bs in self._by_item.items() if len(bs) == 1 and bs[0].key is None and not bs[0].reads_asset
        }

    def _check_instance(self, doc: StreamsDocument) -> None:
        self._check_header(doc.header)

    def _check_header(self, header: Header) -> None:
        inst = header.instance_id
        if self.instance_id is not None and inst is not None and inst != self.instance_id:
            raise _Restarted(f"instanceId {self.instance_id} -> {inst}")

    async def _synchronise(self, client: AgentClient) -> None:
        """Read /current; decide between resuming, replaying a restarted agent's buffer, or a fresh start."""
        cur = await client.current(self._only)
        inst, first = cur.header.instance_id, cur.header.first_sequence or 1
        nxt = cur.header.next_sequence
        if nxt is None:
            raise BadDocument(f"{client.url('/current')}: header without nextSequence")
        if self.instance_id is None:
            self.instance_id = inst
            await self._emit_current(cur)
            return
        if inst != self.instance_id:
            old = self.instance_id
            self.instance_id = inst
            self.stats.count("agent_restarts", message=f"{self.machine}: agent restarted ({old} -> {inst})")
            await self._emit_gap(f"MTConnect agent restarted (instanceId {old} -> {inst}); data in between lost")
            self._conditions.clear()
            self._sets.clear()
            self.next_sequence = None
            if first <= 1:
                self.next_sequence = 1  # nothing overwritten yet: read the new buffer from its start
                return
            await self._emit_current(cur)
            return
        if self.next_sequence is not None and first <= self.next_sequence <= nxt:
            return  # same agent, our position is still in its buffer: resume without loss
        lost = self.next_sequence
        if lost is not None and lost > nxt:
            reason = f"MTConnect agent sequence went back ({lost} -> {nxt}) without a new instanceId"
        else:
            reason = f"MTConnect buffer overrun: sequences {lost}..{first - 1} were overwritten before we read them"
        await self._emit_gap(reason)
        await self._emit_current(cur)

    async def _emit_current(self, cur: StreamsDocument) -> None:
        self.instance_id = cur.header.instance_id
        self._conditions.clear()
        await self._emit_observations(cur.observations, current=True)
        self.next_sequence = cur.header.next_sequence

    # ------------------------------------------------------------ reading samples

    def _sample_path(self, streaming: bool) -> str:
        src = self.source
        path = f"/sample?from={self.next_sequence}&count={src.count}"
        if src.device:
            path = f"/{src.device}{path}"
        if streaming:
            path += f"&interval={src.interval_ms}&heartbeat={src.heartbeat_ms}"
        return path

    async def _handle(self, client: AgentClient, doc: Document, url: str) -> bool:
        """Apply one sample document; True when it carried observations."""
        if isinstance(doc, ErrorDocument):
            if "OUT_OF_RANGE" in doc.codes:
                raise _OutOfRange("; ".join(f"{e.code}: {e.message}" for e in doc.errors))
            raise AdapterError(f"{url}: agent answered {'; '.join(f'{e.code}: {e.message}' for e in doc.errors)}")
        if not isinstance(doc, StreamsDocument):
            raise BadDocument(f"{url}: expected a Streams document, got {type(doc).__name__}")
        self._check_instance(doc)
        if doc.warnings:
            self.stats.count(
                "undeclared_namespace_prefix",
                message=f"{self.machine}: {url}: {doc.warnings[0]} (the element is read by its local name)",
            )
        self._retry.succeeded()  # usable data flows: only now does the reconnect backoff start over
        await self._emit_observations(doc.observations, current=False)
        nxt = doc.header.next_sequence
        if nxt is not None and (self.next_sequence is None or nxt > self.next_sequence):
            self.next_sequence = nxt
        return bool(doc.observations)

    async def _handle_plain(self, page: _PlainPage) -> None:
        """:meth:`_handle` for a page of the common shape, its observations already canonical."""
        self._check_header(page.header)
        self._retry.succeeded()
        if page.dropped:
            self.stats.count("duplicates_dropped", page.dropped)
        out = page.observations if not page.changes else await self._with_tool_lives(page)
        await self._queue_out(out, current=False)
        if page.last is not None:
            self.next_sequence = max(page.last + 1, self.next_sequence or 0)
        nxt = page.header.next_sequence
        if nxt is not None and (self.next_sequence is None or nxt > self.next_sequence):
            self.next_sequence = nxt

    async def _with_tool_lives(self, page: _PlainPage) -> list[Observation]:
        """The page's observations with the tool lives its asset changes announce, read as
        :meth:`_emit_observations` reads them (same requests, cache and counts), each in its place."""
        changes = page.changes
        ordered = changes if page.in_order else sorted(changes, key=_change_seq)
        await self._read_assets([(c.asset_id, c.stamp) for c in ordered])
        out = page.observations
        merged: list[Observation] = []
        at = 0
        for c in changes:
            if c.dropped:
                continue
            merged += out[at : c.at]
            at = c.at
            for b in c.bindings:
                life = self._life(b, c.asset_id)
                if life is not None:
                    merged.append(Observation(self.machine, b.signal, c.when, life.value, c.sequence))
        merged += out[at:]
        if not page.in_order:
            merged.sort(key=_source_seq)
        return merged

    def _plain_page(self, body: bytes) -> _PlainPage | None:
        """A /sample page read from a tree straight into canonical observations, when it has the
        common shape: every observation of a mapped item is a plain one (one signal, whole value, no
        condition, no set) or an asset change whose signals all read the asset (a tool's life, read
        by :meth:`_handle_plain`). The same observations, position and counts as the event parser,
        the document and :meth:`_emit_observations` give (property tests compare them), for a fifth
        less CPU per observation: no record per element, one pass. None for any other page, which
        then takes that path, so anything unusual (and every error) is handled and reported exactly
        as before."""
        tree = streams_tree(body)
        if tree is None:
            return None
        root, q, header = tree
        only, plain, machine, asset_only = self._only, self._plain, self.machine, self._asset_only
        changes: list[_AssetChange] = []
        floor = self.next_sequence if self.next_sequence is not None else _BEFORE_ALL
        out: list[Observation] = []
        append = out.append
        last = _BEFORE_ALL
        in_order = True
        dropped = 0
        try:
            for top in root:
                for ds in top:
                    for cs in ds:
                        for group in cs:
                            gtag = group.tag
                            category = _CATEGORIES.get(gtag[len(q) :] if gtag.startswith(q) else "")
                            if category is None:
                                continue
                            if category == "CONDITION":
                                if any(el.get("dataItemId") in only for el in group):
                                    return None  # a mapped condition: its state is kept by the general path
                                continue
                            for el in group:
                                g = el.get  # keys as bytes: lxml then has none to encode (a sixth of each read)
                                did = g(b"dataItemId")
                                b = plain.get(did)
                                reads = None
                                if b is None:
                                    reads = asset_only.get(did)
                                    if reads is None:
                                        if did in only:
                                            return None  # a set's key, several signals: the general path
                                        continue
                                if len(el) or el.tag.endswith(_SET_TAGS):
                                    return None
                                seq, stamp = g(b"sequence"), g(b"timestamp")
                                if seq is None or stamp is None:
                                    return None
                                sequence = int(seq)
                                if sequence < 0:
                                    return None  # agents count from 1
                                if sequence >= last:
                                    last = sequence
                                else:
                                    in_order = False
                                if sequence < floor:
                                    dropped += 1
                                    if reads is None:
                                        continue
                                raw = el.text or ""
                                if reads is not None:  # its asset is read (a repeat's too) before the page is queued
                                    asset = None if raw == "UNAVAILABLE" else raw
                                    when = parse_time(stamp)
                                    changes.append(_AssetChange(len(out), sequence, asset, stamp, when, reads, sequence < floor))
                                    continue
                                signal = b.signal  # type: ignore[union-attr]  # a plain item's binding: reads is None
                                value = None if raw == "UNAVAILABLE" else convert(signal, raw)
                                append(new_observation(machine, signal, parse_time(stamp), value, sequence))
        except (ValueError, TypeError, OverflowError, AttributeError):
            return None  # a bad number, time or tag: the general path says what
        if not in_order and not changes:  # an agent writes each component's categories apart: sequence
            out.sort(key=_source_seq)  # order, as sorted() keeps ties (with asset changes, once they are in)
        return _PlainPage(header, out, last if out or dropped or changes else None, dropped, changes, in_order)

    async def _poll(self, client: AgentClient) -> None:
        while True:
            page = await client.get(self._sample_path(False), self._only)
            got = await self._handle(client, page.doc, page.url)
            if not got:
                await asyncio.sleep(max(self.source.interval_ms, 50) / 1000)

    async def _stream(self, client: AgentClient) -> None:
        """Read the multipart ``/sample`` stream. Its headers (and a plain answer from an agent that
        does not stream) must come within ``request_timeout_s``; then each part within two heartbeats
        (+1 s). A stream that delivers no complete part in that time is stale: counted, reconnected."""
        url = client.url(self._sample_path(True))
        part_wait = 2 * self.source.heartbeat_ms / 1000 + 1.0
        limit = self.source.request_timeout_s
        timeout = aiohttp.ClientTimeout(total=None, connect=limit, sock_connect=limit)
        deadline = asyncio.timeout(limit)
        try:
            async with deadline, client.session.get(url, timeout=timeout) as resp:
                ctype = resp.headers.get("Content-Type", "")
                if "multipart" not in ctype.lower():
                    body = await read_capped(resp, client.max_document_bytes, url)
                    deadline.reschedule(None)
                    try:
                        doc = await client.parse(body, self._only)
                    except BadDocument as exc:
                        raise BadDocument(f"{url} (HTTP {resp.status}): {exc}") from exc
                    if isinstance(doc, StreamsDocument):
                        # the agent ignored interval and answered one plain document: poll from now on
                        self.stats.count("streaming_refused", message=f"{url}: no multipart stream; polling instead")
                        self.streaming = False
                    await self._handle(client, doc, url)
                else:
                    deadline.reschedule(None)
                    boundary = _boundary(ctype)
                    async for body in iter_multipart(
                        resp.content, boundary, part_wait, max_bytes=client.max_document_bytes, where=url
                    ):
                        page = self._plain_page(body) if len(body) <= client.parse_in_thread_bytes else None
                        if page is not None:
                            await self._handle_plain(page)
                            continue
                        try:
                            doc = await client.parse(body, self._only)
                        except BadDocument as exc:
                            raise BadDocument(f"{url}: {exc}") from exc
                        await self._handle(client, doc, url)
                    raise _StreamEnded(f"{url}: the agent closed the stream")
        except TimeoutError as exc:
            if deadline.expired():
                raise ConnectError(f"{url}: no answer within {limit:g} s (request_timeout_s)") from exc
            self.stats.count("heartbeat_missed")
            raise _StreamEnded(
                f"{url}: stale stream, no complete document within {part_wait:g} s (2 heartbeats + 1 s); reconnecting"
            ) from exc
        except (aiohttp.ClientError, HttpProcessingError, OSError) as exc:
            raise ConnectError(f"{url}: {_reason(exc)}") from exc
        if not self.streaming:
            await self._poll(client)

    # ------------------------------------------------------------ observations

    async def _emit_observations(self, observations: Sequence[MtcObservation], *, current: bool) -> None:
        """Turn one document's observations into canonical ones, queued in one step.

        ``next_sequence`` moves only past what is queued: a reader stopped while this waits for
        room resumes at the first observation not handed over, never past it."""
        ordered = sorted(observations, key=_seq) if not _in_order(observations) else observations
        floor = self.next_sequence if not current else None
        machine, by_item, plain = self.machine, self._by_item, self._plain
        if self._asset_items:
            items = self._asset_items
            await self._read_assets([(o.value, o.timestamp) for o in ordered if o.data_item_id in items])
        out: list[Observation] = []
        append = out.append
        for o in ordered:
            if floor is not None and o.sequence < floor:
                self.stats.count("duplicates_dropped")
                continue
            b = plain.get(o.data_item_id)
            if b is not None and o.category != "CONDITION":
                # the common case, as _value does it: text kept for text signals, else a float (NaN
                # as None), UNAVAILABLE as None, a set's entries joined
                converted = convert(b.signal, o.value)
                try:
                    when = parse_time(o.timestamp)
                except (ValueError, TypeError, OverflowError):
                    try:
                        when = o.time  # raises the BadDocument that names the observation
                    except BadDocument as exc:
                        self.stats.count("bad_timestamp", message=f"{self.machine}: {exc}; observation skipped")
                        continue
                append(new_observation(machine, b.signal, when, converted, o.sequence))
                continue
            bindings = by_item.get(o.data_item_id)
            if not bindings:
                continue
            for b in bindings:
                if b.reads_asset:
                    life = self._life(b, o.value)
                    value = _SKIP if life is None else life.value
                else:
                    value = self._value(b, o)
                if value is _SKIP:
                    continue
                try:
                    when = o.time
                except BadDocument as exc:
                    self.stats.count("bad_timestamp", message=f"{self.machine}: {exc}; observation skipped")
                    continue
                out.append(Observation(machine, b.signal, when, value, o.sequence))  # type: ignore[arg-type]
        await self._queue_out(out, current=current)
        if not current and ordered:
            self.next_sequence = max(ordered[-1].sequence + 1, self.next_sequence or 0)

    async def _queue_out(self, out: list[Observation], *, current: bool) -> None:
        """Queue one page's observations in one step, waiting for room (back-pressure, no loss);
        while waiting, ``next_sequence`` stands at the first one not queued."""
        queue = self._queue
        done = queue.put_some(out)
        while done < len(out):
            if not current:
                self.next_sequence = out[done].source_seq
            await queue.wait_writable()
            done = queue.put_some(out, done)

    def _value(self, b: Binding, o: MtcObservation) -> object:
        if o.category == "CONDITION":
            state = apply_condition(self._conditions.get(o.data_item_id, {}), o)
            self._conditions[o.data_item_id] = state
            return condition_level([c.level for c in state.values()])
        if b.key is not None:
            if o.value is None:
                return None
            if not isinstance(o.value, dict):
                return _SKIP
            merged = self._sets.setdefault(o.data_item_id, {})
            merged.update(o.value)
            if b.key not in o.value:
                return _SKIP
            entry = o.value[b.key]
            return convert(b.signal, entry) if not isinstance(entry, dict) else _SKIP
        return convert(b.signal, o.value)

    async def _read_assets(self, announced: Sequence[tuple[object, str]]) -> None:
        """Re-read, once per document and concurrently, every asset the ASSET_CHANGED observations of
        bound items name (``announced``: their values and timestamps, in sequence order), unless the
        change one announces (asset id and time) is one already read: the agent says when an asset
        changed, so what ``/current`` repeats after a reconnect costs no request."""
        self._assets = {}
        wanted: dict[str, str] = {}
        for value, stamp in announced:
            if isinstance(value, str) and value:
                wanted[value] = stamp
        if not wanted or self._client is None:
            return
        cache = self._asset_cache
        for asset_id, stamp in list(wanted.items()):
            known = cache.get(asset_id)
            if known is not None and known[0] == stamp:
                self._assets[asset_id] = known[1]
                self.stats.count("asset_reads_saved")
                del wanted[asset_id]
        client = self._client
        limit = asyncio.Semaphore(8)

        async def one(asset_id: str) -> None:
            async with limit:
                try:
                    doc = self._assets[asset_id] = await client.asset(asset_id)
                except (BadDocument, ConnectError) as exc:
                    self.stats.count("asset_read_failed", message=f"{self.machine}: asset {asset_id}: {exc}")
                    return
            self.stats.count("asset_reads")
            cache.pop(asset_id, None)
            cache[asset_id] = (wanted[asset_id], doc)
            while len(cache) > _ASSET_CACHE:
                del cache[next(iter(cache))]

        await asyncio.gather(*(one(i) for i in sorted(wanted)))

    def _life(self, b: Binding, asset_id: object) -> Life | None:
        """ASSET_CHANGED named ``asset_id``: the ToolLife (of type ``key``) of the CuttingTool as re-read,
        if any (a tool without that counter, another kind of asset or a failed read give None; a
        counter without a value is a ToolLife whose value is None)."""
        doc = self._assets.get(asset_id) if isinstance(asset_id, str) else None
        if doc is None:
            return None
        for asset in doc.assets:
            if isinstance(asset, CuttingToolAsset):
                lives = [lf for lf in asset.tool_life if b.key in (None, lf.type)]
                if lives:
                    return lives[0]
        return None


_SKIP = object()
_CATEGORIES = {"Samples": "SAMPLE", "Events": "EVENT", "Condition": "CONDITION"}
_BEFORE_ALL = -(1 << 63)
"""Below any sequence an agent writes (they are 64-bit, from 1)."""
_SET_TAGS = ("DataSet", "Table")


@dataclass(frozen=True, slots=True)
class _AssetChange:
    """An ASSET_CHANGED of an item whose signals read the asset, met by the one-pass read."""

    at: int
    """Where its tool lives go: before the page's observation of that index (in document order)."""
    sequence: int
    asset_id: str | None
    """The asset it names (None for UNAVAILABLE)."""
    stamp: str
    """Its timestamp as written: with the asset id, the change the asset cache knows."""
    when: datetime
    bindings: tuple[Binding, ...]
    dropped: bool
    """Below the adapter's next sequence: a repeat, its asset read as the general path reads it, no value emitted."""


def _change_seq(c: _AssetChange) -> int:
    return c.sequence


@dataclass(frozen=True, slots=True)
class _PlainPage:
    """A /sample page of the common shape, read (:meth:`MtConnectAdapter._plain_page`)."""

    header: Header
    observations: list[Observation]
    last: int | None
    """The sequence of its last observation of a mapped item (emitted or dropped as a repeat)."""
    dropped: int
    """Observations below the adapter's next sequence: repeats, dropped."""
    changes: list[_AssetChange]
    """Its asset changes, in document order (none on most pages)."""
    in_order: bool
    """Sequences ascend in document order (when not, the observations are sorted once the tool lives are in)."""


def _seq(o: MtcObservation) -> int:
    return o.sequence


def _source_seq(o: Observation) -> int:
    return o.source_seq or 0


def _in_order(observations: Sequence[MtcObservation]) -> bool:
    """True when sequences already ascend (agents write them so; sorting is for those that do not)."""
    previous = -1
    for o in observations:
        if o.sequence < previous:
            return False
        previous = o.sequence
    return True


def _boundary(content_type: str) -> str:
    for part in content_type.split(";"):
        k, _, v = part.strip().partition("=")
        if k.lower() == "boundary":
            return v.strip().strip('"')
    raise BadDocument(f"multipart stream without a boundary: {content_type!r}")
