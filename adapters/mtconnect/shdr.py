"""SHDR, the line protocol adapters speak to agents, on the agent side: parse, connect, replay.

A line is ``timestamp|key|value|key|value...``; a CONDITION item takes five fields
(``level|nativeCode|nativeSeverity|qualifier|message``), a MESSAGE item two, a TIME_SERIES item
three; DATA_SET values are ``k=v k2='a b' k3`` (a bare key removes it) and TABLE values
``row={a=1 b=2}``. ``@ASSET@|id|type|<xml>`` (or ``--multiline--TAG`` ... ``--multiline--TAG``)
stores an asset, ``@REMOVE_ASSET@|id`` and ``@REMOVE_ALL_ASSETS@|type`` remove them. Lines that
start with ``*`` are commands (``* PING`` / ``* PONG <ms>`` heartbeats, ``* adapterVersion: ..``).

:class:`ShdrFeeder` applies lines to one device of our agent; :func:`replay_shdr` paces a
recorded log by its timestamps at a chosen speed; :class:`ShdrConnection` is the agent's TCP
client of a live adapter (the agent connects to the adapter, sends ``* PING`` and expects
``* PONG <ms>`` within that many milliseconds, else it reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.mtconnect.agent import MtConnectAgent
from adapters.mtconnect.devicemodel import devices_from_xml
from adapters.mtconnect.documents import parse_time
from adapters.mtconnect.parser import safe_tree
from monitor.errors import BadDocument

__all__ = ["ShdrConnection", "ShdrFeeder", "agent_for_device_file", "parse_data_set", "replay_shdr"]

log = logging.getLogger(__name__)

_LEVELS = {"NORMAL": "Normal", "WARNING": "Warning", "FAULT": "Fault", "UNAVAILABLE": None}


def parse_data_set(text: str) -> dict[str, str | dict[str, str | None] | None]:
    """``k=v k2='a b' k3 t={a=1 b=2}`` -> entries (None removes a key; braces give a table row).

    >>> parse_data_set("a=1 b='x y' c t={u=1 v=2}")
    {'a': '1', 'b': 'x y', 'c': None, 't': {'u': '1', 'v': '2'}}
    """
    out: dict[str, str | dict[str, str | None] | None] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] == " ":
            i += 1
        if i >= n:
            break
        j = i
        while j < n and text[j] not in "= ":
            j += 1
        key = text[i:j]
        if j >= n or text[j] == " ":
            out[key] = None
            i = j
            continue
        j += 1  # past '='
        if j < n and text[j] in "'\"{":
            close = "}" if text[j] == "{" else text[j]
            k = text.find(close, j + 1)
            k = n if k < 0 else k
            raw = text[j + 1 : k]
            if close == "}":
                row = parse_data_set(raw)
                out[key] = {rk: rv if isinstance(rv, str) or rv is None else str(rv) for rk, rv in row.items()}
            else:
                out[key] = raw
            i = k + 1
        else:
            k = text.find(" ", j)
            k = n if k < 0 else k
            out[key] = text[j:k]
            i = k
    return out


def agent_for_device_file(data: bytes, device: str | None = None, **agent_options: Any) -> tuple[MtConnectAgent, str]:
    """An agent serving one device of a real device file (the first when ``device`` is None), for
    ``monitor sim --shdr-replay``: pair it with :func:`replay_shdr` of that machine's log."""
    specs = devices_from_xml(data)
    chosen = [d for d in specs if device in (None, d.name, d.uuid)]
    if not chosen:
        raise KeyError(f"no device {device!r} in the device file (it has: {', '.join(d.name for d in specs)})")
    return MtConnectAgent([chosen[0]], **agent_options), chosen[0].name


class ShdrFeeder:
    """Applies SHDR lines to one device of an agent; unknown keys are counted, never fatal."""

    def __init__(self, agent: MtConnectAgent, device: str) -> None:
        if device not in {d.name for d in agent.devices}:
            raise KeyError(f"agent has no device {device!r}")
        self.agent = agent
        self.device = device
        self.unknown: Counter[str] = Counter()
        self.lines = 0
        self.capped_gaps = 0
        """Idle stretches of the log longer than ``max_gap_s`` that the replay shortened."""
        self.skipped_s = 0.0
        """Log time the replay did not wait for (the sum of what the caps cut)."""
        self._multiline: tuple[str, str, str, str, list[str]] | None = None

    def feed(self, line: str) -> None:
        """Apply one line (without its newline)."""
        line = line.rstrip("\r\n")
        if self._multiline is not None:
            stamp, asset_id, asset_type, tag, body = self._multiline
            if line.strip() == tag:
                self._multiline = None
                self._asset(stamp, asset_id, asset_type, "\n".join(body))
            else:
                body.append(line)
            return
        if not line or line.startswith("*"):
            return
        self.lines += 1
        fields = line.split("|")
        stamp = self._stamp(fields[0])
        rest = fields[1:]
        if rest and rest[0].startswith("@"):
            self._asset_command(stamp, rest)
            return
        i = 0
        while i < len(rest):
            key = rest[i]
            item = self.agent.item(self.device, key)
            if item is None:
                self.unknown[key] += 1
                i += 2
                continue
            if item.category == "CONDITION":
                level_text, code = (rest[i + 1 : i + 2] or ["UNAVAILABLE"])[0], (rest[i + 2 : i + 3] or [""])[0]
                message = (rest[i + 5 : i + 6] or [""])[0]
                level = _LEVELS.get(level_text.upper(), "Fault")
                self.agent.publish(self.device, key, message or "", stamp, level=level, native_code=code or None)
                i += 6
                continue
            if item.type == "MESSAGE":
                value = (rest[i + 2 : i + 3] or [""])[0]
                self.agent.publish(self.device, key, None if value == "UNAVAILABLE" else value, stamp)
                i += 3
                continue
            if item.representation == "TIME_SERIES":
                values = (rest[i + 3 : i + 4] or [""])[0].split()
                self.agent.publish(self.device, key, values[-1] if values else None, stamp)
                i += 4
                continue
            raw = rest[i + 1] if i + 1 < len(rest) else ""
            if raw == "UNAVAILABLE":
                self.agent.publish(self.device, key, None, stamp)
            elif item.representation in ("DATA_SET", "TABLE"):
                self.agent.publish(self.device, key, parse_data_set(raw.removeprefix(":MANUAL ")), stamp)
            else:
                self.agent.publish(self.device, key, raw, stamp)
            i += 2

    @staticmethod
    def _stamp(text: str) -> str:
        text = text.split("@", 1)[0].strip()
        if not text:
            return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            return parse_time(text).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        except ValueError:
            return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def _asset_command(self, stamp: str, rest: list[str]) -> None:
        cmd = rest[0]
        if cmd == "@ASSET@" and len(rest) >= 4:
            asset_id, asset_type, body = rest[1], rest[2], "|".join(rest[3:])
            if body.startswith("--multiline--"):
                self._multiline = (stamp, asset_id, asset_type, body.strip(), [])
                return
            self._asset(stamp, asset_id, asset_type, body)
        elif cmd == "@REMOVE_ASSET@" and len(rest) >= 2:
            self.agent.remove_asset(rest[1], stamp)
        elif cmd == "@REMOVE_ALL_ASSETS@":
            self.agent.remove_all_assets(rest[1] if len(rest) > 1 else None, stamp)
        else:
            self.unknown[cmd] += 1

    def _asset(self, stamp: str, asset_id: str, asset_type: str, xml: str) -> None:
        try:
            element = safe_tree(xml.encode())
        except BadDocument as exc:
            self.unknown["@ASSET@ (bad XML)"] += 1
            log.warning("SHDR asset %s refused: %s", asset_id, exc)
            return
        self.agent.add_asset(self.device, asset_id, asset_type, element, stamp)


async def replay_shdr(
    agent: MtConnectAgent,
    device: str,
    lines: Iterable[str] | Path,
    *,
    speed: float = 0.0,
    stop: asyncio.Event | None = None,
    max_gap_s: float | None = None,
) -> ShdrFeeder:
    """Feed a recorded SHDR log to ``device``, paced by its timestamps at ``speed`` x real time.

    ``speed=0`` replays as fast as possible (yielding to the loop every few hundred lines).
    Timestamps that go backwards (real logs have them) are applied without waiting. ``max_gap_s``
    caps the log time waited between two lines: a log with a gap of days (a weekend, a machine
    switched off) goes on after ``max_gap_s`` of log time; the lines keep their own timestamps.
    """
    if speed < 0:
        raise ValueError("speed must be >= 0")
    if max_gap_s is not None and max_gap_s <= 0:
        max_gap_s = None
    feeder = ShdrFeeder(agent, device)
    if isinstance(lines, Path):
        text = await asyncio.to_thread(lines.read_text, encoding="utf-8", errors="replace")
        source: Iterable[str] = text.splitlines()
    else:
        source = lines
    loop = asyncio.get_running_loop()
    wall0: float | None = None
    t0: datetime | None = None
    last: datetime | None = None
    for n, line in enumerate(source):
        if stop is not None and stop.is_set():
            break
        if speed > 0 and line and line[0].isdigit():
            try:
                t = parse_time(line.split("|", 1)[0].split("@", 1)[0])
            except ValueError:
                t = None
            if t is not None:
                if t0 is None or wall0 is None:
                    t0, wall0 = t, loop.time()
                if last is not None and max_gap_s is not None and (t - last).total_seconds() > max_gap_s:
                    cut = (t - last).total_seconds() - max_gap_s
                    feeder.capped_gaps += 1
                    feeder.skipped_s += cut
                last = t if last is None or t > last else last
                delay = wall0 + ((t - t0).total_seconds() - feeder.skipped_s) / speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
        elif n % 256 == 0:
            await asyncio.sleep(0)
        feeder.feed(line)
    return feeder


class ShdrConnection:
    """The agent's link to one live SHDR adapter: connect, heartbeat with PING/PONG, feed lines, reconnect."""

    def __init__(
        self,
        agent: MtConnectAgent,
        device: str,
        host: str,
        port: int,
        *,
        reconnect_s: float = 1.0,
        ping_s: float = 10.0,
    ) -> None:
        self.feeder = ShdrFeeder(agent, device)
        self.host, self.port = host, port
        self.reconnect_s = reconnect_s
        self.ping_s = ping_s
        self.heartbeat_s: float | None = None
        self.connected = asyncio.Event()
        self.connections = 0
        self.timeouts = 0

    async def run(self) -> None:
        """Connect and read until cancelled; a silent adapter (no PONG in time) is dropped and redialled."""
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                log.info("SHDR adapter %s:%s not reachable (%s); retrying", self.host, self.port, exc)
                await asyncio.sleep(self.reconnect_s)
                continue
            self.connections += 1
            self.connected.set()
            try:
                await self._session(reader, writer)
            except (TimeoutError, ConnectionError) as exc:
                self.timeouts += isinstance(exc, TimeoutError)
                log.info("SHDR adapter %s:%s lost (%s); reconnecting", self.host, self.port, exc or "timeout")
            finally:
                self.connected.clear()
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
            await asyncio.sleep(self.reconnect_s)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* PING\n")
        await writer.drain()
        loop = asyncio.get_running_loop()
        last_rx = loop.time()
        next_ping = loop.time() + self.ping_s
        while True:
            hb = self.heartbeat_s
            try:
                raw = await asyncio.wait_for(reader.readline(), hb if hb else self.ping_s)
            except TimeoutError:
                if hb and loop.time() - last_rx > 2 * hb:
                    raise
                raw = None
            if raw is not None:
                if not raw:
                    raise ConnectionError("adapter closed the connection")
                last_rx = loop.time()
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if line.startswith("* PONG"):
                    parts = line.split()
                    if len(parts) >= 3 and parts[2].isdigit():
                        self.heartbeat_s = int(parts[2]) / 1000
                else:
                    self.feeder.feed(line)
            if loop.time() >= next_ping:
                writer.write(b"* PING\n")
                await writer.drain()
                next_ping = loop.time() + (self.heartbeat_s or self.ping_s)
