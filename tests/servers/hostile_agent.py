"""A hostile MTConnect agent over real HTTP: one aiohttp server, one misbehaviour per URL prefix.

``http://127.0.0.1:<port>/<kind>`` is an agent base URL. Requests a kind does not misbehave on
(``/probe`` and ``/current`` mostly) are answered by a real agent behind it (our
:class:`~adapters.mtconnect.agent.MtConnectAgent`), so an adapter gets past its handshake and
meets the misbehaviour where a broken or malicious agent would show it. Kinds:

- ``linetoolong``: ``/sample`` streams multipart whose first part has a 600 KiB header line;
- ``bigheader``: ``/sample`` answers with a 600 KiB HTTP header;
- ``hugeprobe``: ``/probe`` answers 1 GB (chunked, no length), generated on the fly, never stored;
- ``hugesample``: ``/sample`` answers a plain (non-multipart) 1 GB document, generated on the fly;
- ``endless``: ``/sample`` answers a plain document that trickles 1 KiB every 20 ms, never ending;
- ``garbage``: ``/sample`` answers 200 with bytes that are not XML;
- ``stale``: ``/sample`` starts a valid multipart stream, then sends only blank lines, never a part;
- ``silent``: ``/sample`` accepts the request and never answers.

``requests[kind]`` counts the requests each kind received, by path ending (``probe``, ``sample``...).
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from types import TracebackType
from typing import Self

import aiohttp
from aiohttp import web

__all__ = ["GIGABYTE", "KINDS", "HostileAgent"]

GIGABYTE = 1 << 30
KINDS = ("linetoolong", "bigheader", "hugeprobe", "hugesample", "endless", "garbage", "stale", "silent")
_FILLER = b"<Junk>" + b"x" * (1 << 20) + b"</Junk>\n"


class HostileAgent:
    """Serve the misbehaving agents in front of ``upstream`` (a real agent's base URL)."""

    def __init__(self, upstream: str, *, huge_bytes: int = GIGABYTE) -> None:
        self.upstream = upstream.rstrip("/")
        self.huge_bytes = huge_bytes
        self.requests: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.bytes_sent: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = asyncio.Event()
        self.port = 0

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.port}/{kind}"

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_get("/{kind}/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._misbehave(request)
        except ConnectionError:  # the client hung up, as it should
            return web.Response(status=499)

    async def _misbehave(self, request: web.Request) -> web.StreamResponse:
        kind, tail = request.match_info["kind"], request.match_info["tail"]
        what = tail.rsplit("/", 1)[-1]
        self.requests[kind][what] += 1
        if kind == "hugeprobe" and what == "probe":
            return await self._huge(request, kind)
        if what != "sample":
            return await self._proxy(request, tail)
        if kind == "linetoolong":
            resp = await self._multipart(request)
            await resp.write(b"--B\r\nX-Junk: " + b"a" * (600 << 10) + b"\r\n\r\n")
            await self._hold()
            return resp
        if kind == "bigheader":
            big = web.StreamResponse(
                headers={"X-Junk": "a" * (600 << 10), "Content-Type": "multipart/x-mixed-replace;boundary=B"}
            )
            await big.prepare(request)
            await self._hold()
            return big
        if kind == "hugesample":
            return await self._huge(request, kind)
        if kind == "endless":
            resp = web.StreamResponse(headers={"Content-Type": "text/xml"})
            await resp.prepare(request)
            await resp.write(b'<?xml version="1.0"?><MTConnectStreams>')
            while not self._closing.is_set():
                await resp.write(b"<!--" + b"-" * 1016 + b"-->")
                self.bytes_sent[kind] += 1024
                await asyncio.sleep(0.02)
            return resp
        if kind == "garbage":
            return web.Response(body=b"Service temporarily unavailable \x00\xff", content_type="text/xml")
        if kind == "stale":
            resp = await self._multipart(request)
            while not self._closing.is_set():
                await resp.write(b"\r\n")
                await asyncio.sleep(0.05)
            return resp
        if kind == "silent":
            await self._hold()
            return web.Response(status=503)
        raise web.HTTPNotFound(text=f"unknown hostile kind {kind!r}; one of {KINDS}")

    async def _hold(self) -> None:
        """Keep a connection open until the server closes (the client gives up first)."""
        await self._closing.wait()

    async def _multipart(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace;boundary=B"})
        await resp.prepare(request)
        return resp

    async def _huge(self, request: web.Request, kind: str) -> web.StreamResponse:
        """``huge_bytes`` of one never-ending document, generated as it is sent (the server holds 1 MiB)."""
        resp = web.StreamResponse(headers={"Content-Type": "text/xml"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'<?xml version="1.0"?><MTConnectDevices>')
        sent = 0
        while sent < self.huge_bytes:
            await resp.write(_FILLER)  # waits while the client does not read: back-pressure, no pile-up
            sent += len(_FILLER)
            self.bytes_sent[kind] += len(_FILLER)
        await resp.write_eof()
        return resp

    async def _proxy(self, request: web.Request, tail: str) -> web.Response:
        assert self._session is not None
        async with self._session.get(f"{self.upstream}/{tail}", params=request.query) as r:
            return web.Response(body=await r.read(), status=r.status, content_type="text/xml")
