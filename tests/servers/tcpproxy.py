"""A TCP proxy in front of a server's Unix socket that can cut the network: after :meth:`cut`
nothing more is forwarded in either direction and new connections hang, as when a cable is pulled
or a switch dies (the client's kernel still accepts what it sends, for a while: only timeouts of the
client itself and the server's idle-session timeouts notice)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["CuttableProxy", "running_proxy"]


class CuttableProxy:
    """Listens on 127.0.0.1 (port picked by the kernel), forwards each connection to ``target``."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.port = 0
        self.connections = 0
        self._open = asyncio.Event()
        self._open.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def cut(self) -> None:
        """From now on nothing is forwarded and new connections get no answer."""
        self._open.clear()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        try:
            await self._open.wait()
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
            self._writers.append(up_writer)
            self.connections += 1
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self._open.wait()  # cut: this chunk is never delivered, and nothing more is read
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()


@asynccontextmanager
async def running_proxy(target: str) -> AsyncIterator[CuttableProxy]:
    proxy = CuttableProxy(target)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
