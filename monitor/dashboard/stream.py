"""Server-sent events (``GET /api/events``): the daemon's hub, relayed to browsers.

At most ``dashboard.max_event_streams`` streams are served at once (each holds a socket and a
subscription); more are refused with 503 and ``Retry-After``, so a tab left open in every
browser of the shop, or a client opening streams in a loop, cannot run the daemon out of file
descriptors. Each browser gets its own bounded hub subscription (:data:`QUEUE_SIZE` events); a tab that stops
reading loses the oldest events (counted by the hub) instead of growing the daemon. Events are
``event: part|alert|machine`` with the codec's JSON dict as ``data``; a comment line every
:data:`KEEPALIVE_S` seconds keeps proxies from closing an idle stream. At shutdown every open
stream is told to end, so the server stops at once instead of waiting for browsers.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from monitor.codec import json_bytes
from monitor.dashboard.api import API_KEY
from monitor.events import HubEvent, Subscription

__all__ = ["KEEPALIVE_S", "QUEUE_SIZE", "RETRY_AFTER_S", "STREAMS_KEY", "add_stream_routes", "format_event"]

QUEUE_SIZE = 256
KEEPALIVE_S = 15.0
RETRY_AFTER_S = 10.0
STREAMS_KEY: web.AppKey[set[Subscription]] = web.AppKey("streams")
_END = HubEvent("end", {})


def format_event(event: HubEvent) -> bytes:
    """One SSE frame. JSON never contains a raw newline, so ``data`` is a single line.

    >>> format_event(HubEvent("part", {"machine": "m1"}))
    b'event: part\\ndata: {"machine":"m1"}\\n\\n'
    """
    return b"event: %s\ndata: %s\n\n" % (event.kind.encode(), json_bytes(event.data))


async def _events(request: web.Request) -> web.StreamResponse:
    api = request.app[API_KEY]
    streams = request.app[STREAMS_KEY]
    limit = api.site.config.dashboard.max_event_streams
    if len(streams) >= limit:
        raise web.HTTPServiceUnavailable(
            text=f"{limit} live event streams are open (dashboard.max_event_streams); close a tab or try again later",
            headers={"Retry-After": str(int(RETRY_AFTER_S))},
        )
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    sub = api.subscribe(QUEUE_SIZE)
    streams.add(sub)
    try:
        await response.prepare(request)
        await response.write(b"retry: 3000\n: connected\n\n")
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_S):
                    event = await sub.queue.get()
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if event is _END:
                break
            await response.write(format_event(event))
    except (ConnectionResetError, ConnectionError):
        pass  # the browser went away
    finally:
        streams.discard(sub)
        sub.close()
    return response


async def _end_streams(app: web.Application) -> None:
    streams: set[Subscription] = app[STREAMS_KEY]
    for sub in tuple(streams):
        sub.offer(_END)


def add_stream_routes(app: web.Application) -> None:
    """Register ``/api/events`` and the shutdown hook that ends open streams."""
    app[STREAMS_KEY] = set()
    app.router.add_get("/api/events", _events)
    app.on_shutdown.append(_end_streams)
