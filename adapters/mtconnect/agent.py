"""Our own MTConnect agent: an aiohttp server over a bounded observation buffer.

It serves what real agents serve - ``/probe``, ``/current`` (``at``), ``/sample`` (``from``,
``count``, ``interval``, ``heartbeat``; streaming as ``multipart/x-mixed-replace`` parts with
``Content-length``), ``/assets``, ``/asset/ID``, the same under ``/<device>/`` - and answers bad
requests with MTConnectError documents (``OUT_OF_RANGE``, ``INVALID_REQUEST``, ``NO_DEVICE``,
``ASSET_NOT_FOUND``, ``INVALID_URI``). Every restart gets a new ``instanceId`` and starts the
sequence at 1, so clients can tell.

Feed it from code (:meth:`MtConnectAgent.publish`, used by the simulated cell) or from SHDR
(:mod:`adapters.mtconnect.shdr`). It starts on 127.0.0.1, port 0 by default, and is ready when
``async with`` returns::

    async with MtConnectAgent([device_spec]) as agent:
        print(agent.url)       # http://127.0.0.1:<port>
        agent.publish("vmc-01", "spindle_load", 42.0)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from adapters.mtconnect.buffer import ObservationBuffer
from adapters.mtconnect.devicemodel import DeviceSpec, ItemSpec
from adapters.mtconnect.documents import CuttingToolAsset, MtcObservation, ObservedValue
from adapters.mtconnect.render import (
    AgentInfo,
    ErrorDetail,
    ItemPlace,
    now_text,
    render_assets,
    render_cutting_tool,
    render_devices,
    render_error,
    render_streams,
)

__all__ = ["BOUNDARY", "MtConnectAgent", "new_instance_id"]

log = logging.getLogger(__name__)

BOUNDARY = "a1b2c3d4e5f6mtconnectboundary"
_last_instance = 0


def new_instance_id() -> int:
    """A fresh instanceId: the start time in seconds, never repeated within this process."""
    global _last_instance
    _last_instance = max(int(time.time()), _last_instance + 1)
    return _last_instance


class _RequestError(Exception):
    def __init__(self, code: str, message: str, status: int = 400, **detail: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.status, self.detail = code, message, status, detail


@dataclass(slots=True)
class _StoredAsset:
    asset_id: str
    asset_type: str
    device_uuid: str
    element: Any
    timestamp: str
    removed: bool = False


class MtConnectAgent:
    """An MTConnect agent serving the given devices from a ring buffer of ``buffer_size`` observations."""

    def __init__(
        self,
        devices: Sequence[DeviceSpec] = (),
        *,
        buffer_size: int = 131_072,
        asset_buffer_size: int = 1024,
        host: str = "127.0.0.1",
        port: int = 0,
        filter_duplicates: bool = True,
        max_count: int = 100_000,
        streaming: bool = True,
        multipart: str = "x-mixed-replace",
    ) -> None:
        if buffer_size < 1 or asset_buffer_size < 1:
            raise ValueError("buffer sizes must be at least 1")
        self.host, self._port = host, port
        self.buffer_size = buffer_size
        self.asset_buffer_size = asset_buffer_size
        self.filter_duplicates = filter_duplicates
        self.max_count = max_count
        self.streaming = streaming
        if multipart not in ("x-mixed-replace", "mixed"):
            raise ValueError("multipart must be 'x-mixed-replace' (1.x agents) or 'mixed' (2.x agents)")
        self.multipart = multipart
        self.instance_id = new_instance_id()
        self._buffer = ObservationBuffer(buffer_size)
        self._devices: dict[str, DeviceSpec] = {}
        self._places: dict[str, ItemPlace] = {}
        self._by_name: dict[tuple[str, str], str] = {}
        self._device_items: dict[str, frozenset[str]] = {}
        self._assets: OrderedDict[str, _StoredAsset] = OrderedDict()
        self._model_change = now_text()
        self._event = asyncio.Event()
        self._generation = 0
        self._stalled = False
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._streams: set[asyncio.Task[Any]] = set()
        for spec in devices:
            self.add_device(spec)

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Bind and start serving; returns once the port is known and requests are accepted."""
        if self._runner is not None:
            raise RuntimeError("agent already started")
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        server = site._server  # aiohttp keeps the bound sockets here; port 0 needs the real one
        sockets = getattr(server, "sockets", None) or []
        self._port = sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        """Stop streaming, close connections and release the port; safe to call twice."""
        self._closing = True
        self._wake()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    def restart(self) -> None:
        """Behave like a restarted agent: new instanceId, empty buffer from sequence 1, streams dropped."""
        self.instance_id = new_instance_id()
        self._buffer = ObservationBuffer(self.buffer_size)
        self._generation += 1
        for spec in self._devices.values():
            self._initial(spec)
        self._wake()

    def stall(self, stalled: bool = True) -> None:
        """Freeze every open stream (no data, no heartbeat) to test clients' dead-stream detection."""
        self._stalled = stalled
        self._wake()

    # ------------------------------------------------------------ model and feeding

    def add_device(self, spec: DeviceSpec) -> None:
        """Serve one more device; every item starts UNAVAILABLE as in a real agent."""
        if spec.name in self._devices:
            raise ValueError(f"device {spec.name!r} already added")
        self._devices[spec.name] = spec
        ids: set[str] = set()
        for comp, item in spec.walk():
            if item.id in self._places:
                raise ValueError(f"data item id {item.id!r} is used twice")
            ctype = "Device" if isinstance(comp, DeviceSpec) else comp.type
            cname = comp.name
            self._places[item.id] = ItemPlace(spec, ctype, comp.id, cname, item)
            self._by_name.setdefault((spec.name, item.id), item.id)
            if item.name:
                self._by_name.setdefault((spec.name, item.name), item.id)
            ids.add(item.id)
        self._device_items[spec.name] = frozenset(ids)
        self._model_change = now_text()
        self._initial(spec)

    def _initial(self, spec: DeviceSpec) -> None:
        t = now_text()
        for _, item in spec.walk():
            self._store(item, None, t, level=None if item.category == "CONDITION" else "")

    @property
    def devices(self) -> list[DeviceSpec]:
        return list(self._devices.values())

    def item(self, device: str, key: str) -> ItemSpec | None:
        """The data item a device knows by id or name (SHDR keys use either)."""
        ident = self._by_name.get((device, key))
        return self._places[ident].item if ident is not None else None

    def publish(
        self,
        device: str,
        data_item: str,
        value: ObservedValue | float | int,
        time: datetime | str | None = None,
        *,
        level: str | None = None,
        native_code: str | None = None,
        asset_type: str | None = None,
    ) -> int | None:
        """Record a value of ``data_item`` (id or name) of ``device``; returns its sequence.

        None is UNAVAILABLE. A repeat of the current value is dropped (returns None) unless the
        agent was made with ``filter_duplicates=False``. For conditions give ``level``
        (``Normal``/``Warning``/``Fault``; None for Unavailable) and the message as ``value``.
        """
        item = self.item(device, data_item)
        if item is None:
            raise KeyError(f"device {device!r} has no data item {data_item!r}")
        stamp = time if isinstance(time, str) else now_text(time)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = repr(float(value)) if not float(value).is_integer() else str(int(value))
        return self._store(item, value, stamp, level=level, native_code=native_code, asset_type=asset_type)

    def _store(
        self,
        item: ItemSpec,
        value: Any,
        stamp: str,
        *,
        level: str | None = "",
        native_code: str | None = None,
        asset_type: str | None = None,
    ) -> int | None:
        place = self._places[item.id]
        cond = item.category == "CONDITION"
        obs = MtcObservation(
            0,
            stamp,
            item.id,
            item.category,
            item.type if cond else "",
            value,
            place.device.name,
            place.component_id,
            level if cond else None,
            native_code if cond else None,
            asset_type,
        )
        if cond and level not in (None, "Normal", "Warning", "Fault"):
            raise ValueError(f"condition level must be Normal, Warning, Fault or None, not {level!r}")
        discrete = item.discrete or asset_type is not None  # every asset update is news, even for the same id
        if self.filter_duplicates and not discrete and self._buffer.unchanged(obs):
            return None
        stored = self._buffer.add(obs)
        self._wake()
        return stored.sequence

    def _wake(self) -> None:
        ev, self._event = self._event, asyncio.Event()
        ev.set()

    # ------------------------------------------------------------ assets

    def add_asset(
        self,
        device: str,
        asset_id: str,
        asset_type: str,
        element: Any,
        time: datetime | str | None = None,
    ) -> None:
        """Store an asset (an lxml element) and fire the device's ASSET_CHANGED event."""
        spec = self._devices.get(device)
        if spec is None:
            raise KeyError(f"no device {device!r}")
        stamp = time if isinstance(time, str) else now_text(time)
        element.set("timestamp", stamp)
        element.set("deviceUuid", spec.uuid)
        self._assets.pop(asset_id, None)
        self._assets[asset_id] = _StoredAsset(asset_id, asset_type, spec.uuid, element, stamp)
        while len(self._assets) > self.asset_buffer_size:
            self._assets.popitem(last=False)
        changed = self._find_type(spec, "ASSET_CHANGED")
        if changed is not None:
            self._store(changed, asset_id, stamp, asset_type=asset_type)

    def add_cutting_tool(self, device: str, tool: CuttingToolAsset, time: datetime | str | None = None) -> None:
        """Store a CuttingTool from our record of it (tool life and status) and fire ASSET_CHANGED."""
        self.add_asset(device, tool.asset_id, "CuttingTool", render_cutting_tool(tool), time)

    def remove_asset(self, asset_id: str, time: datetime | str | None = None) -> bool:
        """Mark an asset removed and fire ASSET_REMOVED; False when it is unknown."""
        stored = self._assets.get(asset_id)
        if stored is None:
            return False
        stamp = time if isinstance(time, str) else now_text(time)
        stored.removed = True
        stored.element.set("removed", "true")
        for spec in self._devices.values():
            if spec.uuid == stored.device_uuid:
                removed = self._find_type(spec, "ASSET_REMOVED")
                if removed is not None:
                    self._store(removed, asset_id, stamp, asset_type=stored.asset_type)
        return True

    def remove_all_assets(self, asset_type: str | None = None, time: datetime | str | None = None) -> int:
        """Remove every asset (of one type if given); returns how many were removed."""
        ids = [a.asset_id for a in self._assets.values() if not a.removed and asset_type in (None, a.asset_type)]
        for asset_id in ids:
            self.remove_asset(asset_id, time)
        return len(ids)

    @staticmethod
    def _find_type(spec: DeviceSpec, type_: str) -> ItemSpec | None:
        for _, item in spec.walk():
            if item.type == type_:
                return item
        return None

    # ------------------------------------------------------------ HTTP

    def _info(self) -> AgentInfo:
        live = sum(1 for a in self._assets.values() if not a.removed)
        return AgentInfo(self.instance_id, self.buffer_size, self.asset_buffer_size, live, self._model_change)

    def _xml(self, body: bytes, status: int = 200) -> web.Response:
        return web.Response(body=body, status=status, content_type="text/xml", charset="utf-8")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        try:
            device: str | None = None
            if parts and parts[0] not in ("probe", "current", "sample", "assets", "asset"):
                device = parts.pop(0)
                if device not in self._devices:
                    raise _RequestError("NO_DEVICE", f"Could not find the device '{device}'", 404)
            op = parts[0] if parts else "probe"
            if op == "probe" and len(parts) <= 1:
                return self._probe(device)
            if op == "current" and len(parts) == 1:
                return self._current(request, device)
            if op == "sample" and len(parts) == 1:
                return await self._sample(request, device)
            if op == "assets" and len(parts) == 1:
                return self._assets_doc(request, device, None)
            if op in ("asset", "assets") and len(parts) == 2:
                return self._assets_doc(request, device, parts[1].split(";"))
            raise _RequestError("INVALID_URI", f"'{request.path}' is not a request this agent serves", 404)
        except _RequestError as err:
            detail = ErrorDetail(err.code, err.message, request.path_qs, **err.detail)
            return self._xml(render_error(self._info(), detail), err.status)

    def _probe(self, device: str | None) -> web.Response:
        specs = [self._devices[device]] if device else list(self._devices.values())
        return self._xml(render_devices(self._info(), specs))

    @staticmethod
    def _int(request: web.Request, name: str, default: int | None) -> int | None:
        raw = request.query.get(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise _RequestError("INVALID_REQUEST", f"'{name}' must be an integer, not '{raw}'") from None

    def _current(self, request: web.Request, device: str | None) -> web.Response:
        at = self._int(request, "at", None)
        buf = self._buffer
        if at is not None and not buf.first_sequence <= at < buf.next_sequence:
            raise _RequestError(
                "OUT_OF_RANGE",
                f"'at' must be between {buf.first_sequence} and {buf.next_sequence - 1}",
                parameter="from",  # the 2.7 schema has no 'at' parameter name; it is the sequence asked for
                value=str(at),
                minimum=buf.first_sequence,
                maximum=buf.next_sequence - 1,
            )
        obs = buf.state(at)
        if device is not None:
            ids = self._device_items[device]
            obs = [o for o in obs if o.data_item_id in ids]
        nxt = at + 1 if at is not None else buf.next_sequence
        return self._xml(self._streams_doc(obs, nxt))

    def _streams_doc(self, obs: Sequence[MtcObservation], next_sequence: int) -> bytes:
        buf = self._buffer
        return render_streams(
            self._info(),
            obs,
            self._places,
            next_sequence=next_sequence,
            first_sequence=buf.first_sequence,
            last_sequence=max(buf.next_sequence - 1, buf.first_sequence),
        )

    def _slice(self, start: int, count: int, device: str | None) -> tuple[list[MtcObservation], int]:
        """Up to ``count`` observations from ``start`` (of one device if given) and the next sequence."""
        buf = self._buffer
        if device is None:
            got = buf.range(start, count)
            return got, (got[-1].sequence + 1 if got else max(start, buf.first_sequence))
        ids = self._device_items[device]
        out: list[MtcObservation] = []
        pos = max(start, buf.first_sequence)
        while pos < buf.next_sequence and len(out) < count:
            chunk = buf.range(pos, max(count, 1024))
            for o in chunk:
                pos = o.sequence + 1
                if o.data_item_id in ids:
                    out.append(o)
                    if len(out) == count:
                        break
            if not chunk:
                break
        return out, pos

    def _check_from(self, start: int) -> None:
        buf = self._buffer
        if start < buf.first_sequence or start > buf.next_sequence:
            raise _RequestError(
                "OUT_OF_RANGE",
                f"'from' must be greater than or equal to {buf.first_sequence} and at most {buf.next_sequence}",
                parameter="from",
                value=str(start),
                minimum=buf.first_sequence,
                maximum=buf.next_sequence,
            )

    async def _sample(self, request: web.Request, device: str | None) -> web.StreamResponse:
        interval = self._int(request, "interval", None)
        count = self._int(request, "count", 100)
        heartbeat = self._int(request, "heartbeat", 10_000)
        assert count is not None and heartbeat is not None
        if count < 1 or count > self.max_count:
            raise _RequestError(
                "OUT_OF_RANGE",
                f"'count' must be between 1 and {self.max_count}",
                parameter="count",
                value=str(count),
                minimum=1,
                maximum=self.max_count,
            )
        if heartbeat < 1 or (interval is not None and interval < 0):
            raise _RequestError("INVALID_REQUEST", "'heartbeat' must be positive and 'interval' not negative")
        start = self._int(request, "from", None)
        if start is None:
            start = self._buffer.next_sequence if interval is not None else self._buffer.first_sequence
        self._check_from(start)
        if interval is None or not self.streaming:  # an agent without streaming ignores interval
            obs, nxt = self._slice(start, count, device)
            return self._xml(self._streams_doc(obs, nxt if obs else self._buffer.next_sequence))
        return await self._stream(request, device, start, count, interval, heartbeat)

    async def _stream(
        self, request: web.Request, device: str | None, start: int, count: int, interval: int, heartbeat: int
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": f"multipart/{self.multipart};boundary={BOUNDARY}", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        generation = self._generation
        pos = start
        loop = asyncio.get_running_loop()
        last = loop.time()
        try:
            while not self._closing and generation == self._generation:
                event = self._event
                if self._stalled:
                    await event.wait()
                    continue
                if pos < self._buffer.first_sequence:
                    detail = ErrorDetail(
                        "OUT_OF_RANGE",
                        f"client fell behind: {pos} was overwritten",
                        request.path_qs,
                        "from",
                        str(pos),
                        self._buffer.first_sequence,
                        self._buffer.next_sequence,
                    )
                    body = render_error(self._info(), detail)
                    await self._part(resp, body)
                    break
                obs, nxt = self._slice(pos, count, device)
                if obs:
                    await self._part(resp, self._streams_doc(obs, nxt))
                    pos, last = nxt, loop.time()
                    if interval:
                        await asyncio.sleep(interval / 1000)
                    continue
                pos = max(pos, nxt)
                wait = heartbeat / 1000 - (loop.time() - last)
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(event.wait(), wait)
                    continue
                await self._part(resp, self._streams_doc([], pos))
                last = loop.time()
        except (ConnectionResetError, ConnectionError):
            return resp
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    @staticmethod
    async def _part(resp: web.StreamResponse, body: bytes) -> None:
        head = f"--{BOUNDARY}\r\nContent-type: text/xml\r\nContent-length: {len(body)}\r\n\r\n".encode()
        await resp.write(head + body + b"\r\n")

    def _assets_doc(self, request: web.Request, device: str | None, ids: list[str] | None) -> web.Response:
        uuid = self._devices[device].uuid if device else None
        if ids is not None:
            found = []
            for i in ids:
                a = self._assets.get(i)
                if a is None:
                    raise _RequestError("ASSET_NOT_FOUND", f"Cannot find asset: {i}", 404, asset_id=i)
                found.append(a)
        else:
            want_removed = request.query.get("removed") == "true"
            kind = request.query.get("type")
            count = self._int(request, "count", None)
            found = [
                a
                for a in reversed(self._assets.values())
                if (want_removed or not a.removed)
                and (kind is None or a.asset_type == kind)
                and (uuid is None or a.device_uuid == uuid)
            ]
            found = list(itertools.islice(found, count)) if count is not None else found
        return self._xml(render_assets(self._info(), [a.element for a in found]))
