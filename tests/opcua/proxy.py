"""A TCP proxy for fault drills between a client and a real server.

Two kinds of trouble, as they look to the client:

* ``stall()``: a hung controller or a half-dead network. The connection stays open but nothing
  gets through (bytes wait in the proxy and flow again on ``resume()``); this is what the
  adapter's stale-data watchdog exists for.
* ``cut()``: the network is gone. Bytes in flight are lost in both directions, new connections
  are accepted but never reach the server; ``restore()`` resets every connection that lived
  through the outage (as the TCP peers would once they can talk again) and lets new ones through.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

__all__ = ["FaultProxy"]


class FaultProxy:
    """``async with FaultProxy(host, port) as p:`` forwards 127.0.0.1:p.port to host:port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.cuts = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._cut = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._through_cut: set[asyncio.StreamWriter] = set()

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for w in list(self._writers):
            await _close(w)
        await self._server.wait_closed()

    def stall(self) -> None:
        """Stop forwarding in both directions; connections stay open, bytes wait."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def cut(self) -> None:
        """The network goes away: from now on bytes are dropped and no new connection gets through."""
        self._cut = True
        self.cuts += 1
        self._through_cut = set(self._writers)

    async def restore(self) -> None:
        """The network is back: connections that lived through the cut are reset, new ones pass."""
        self._cut = False
        doomed, self._through_cut = self._through_cut, set()
        for w in doomed:
            await _close(w)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self._cut:
            # the far side is unreachable: the client's connect hangs until it gives up
            self._through_cut.add(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._writers.discard(writer)
            await _close(writer)
            return
        self._writers.add(up_writer)
        pair = {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst, pair))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, pair: set[asyncio.StreamWriter]) -> None:
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                await self._flowing.wait()
                if self._cut or dst in self._through_cut or pair & self._through_cut:
                    continue  # lost on the wire
                dst.write(data)
                await dst.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            self._writers.discard(dst)
            await _close(dst)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ConnectionError):
        await writer.wait_closed()
