"""Serving the dashboard: the aiohttp application, its security headers and its static files.

The daemon owns the lifetime: it calls :func:`serve_dashboard` with its open core
and ``runner.cleanup()`` at shutdown (open event streams are ended first, so shutdown is quick).
Everything is served from the package: the page scripts and styles under ``static/`` and the
plotly.js bundle that the ``plotly`` Python package ships; nothing comes from a CDN.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from monitor.commands import OffsetApply
from monitor.dashboard.api import API_KEY, OFFSET_KEY, add_api_routes
from monitor.dashboard.pages import add_page_routes
from monitor.dashboard.stream import add_stream_routes
from monitor.errors import MonitorError

if TYPE_CHECKING:
    from monitor.core import MonitorApi

__all__ = ["CONTENT_SECURITY_POLICY", "MetricsEndpoint", "build_app", "plotly_js_path", "serve_dashboard"]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""Only this server's own files run. Inline *styles* are allowed because plotly.js positions its
chart elements with style attributes; inline scripts and eval are not."""

_STATIC = "static"
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def plotly_js_path() -> Path:
    """The minified plotly.js bundled in the ``plotly`` Python package (for offline use)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():  # pragma: no cover - a broken plotly install
        raise FileNotFoundError(f"plotly.min.js not found at {path}; reinstall the plotly package")
    return path


@web.middleware
async def _headers(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Security headers on every answer; API answers are never cached."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
        _secure(request, response)
        raise
    _secure(request, response)
    return response


def _secure(request: web.Request, response: web.StreamResponse) -> None:
    if response.prepared:  # a stream (SSE) that already sent its headers
        return
    h = response.headers
    h.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "no-referrer")
    if request.path.startswith("/api/"):
        h.setdefault("Cache-Control", "no-store")


MetricsEndpoint = Callable[[], Awaitable[tuple[str, bytes]]]
"""What ``/metrics`` answers: (content type, body) of the Prometheus exposition, made at each scrape."""


def build_app(api: MonitorApi, *, metrics: MetricsEndpoint | None = None, offsets: OffsetApply | None = None) -> web.Application:
    """The dashboard application for a running monitor (the daemon's core, or anything offering
    its API), with ``/metrics`` when ``metrics`` is given and offsets applied through ``offsets``."""
    app = web.Application(middlewares=[_headers])
    app[API_KEY] = api
    app[OFFSET_KEY] = offsets
    add_api_routes(app)
    add_stream_routes(app)
    add_page_routes(app)
    plotly_js = plotly_js_path()

    async def _plotly(_: web.Request) -> web.FileResponse:
        return web.FileResponse(plotly_js, headers={"Cache-Control": "public, max-age=86400"})

    app.router.add_get("/static/vendor/plotly.min.js", _plotly)

    if metrics is not None:
        scrape = metrics

        async def _metrics(_: web.Request) -> web.Response:
            content_type, body = await scrape()
            return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})

        app.router.add_get("/metrics", _metrics)
    static_dir = Path(str(resources.files("monitor.dashboard").joinpath(_STATIC)))
    app.router.add_static("/static/", static_dir, show_index=False, follow_symlinks=False)
    return app


async def serve_dashboard(
    api: MonitorApi, bind: str, port: int, *, metrics: MetricsEndpoint | None = None, offsets: OffsetApply | None = None
) -> web.AppRunner:
    """Start the dashboard on ``bind:port`` (0 = any free port); returns the started runner.

    The bound port is ``runner.addresses[0][1]``; ``await runner.cleanup()`` stops it.
    """
    # handler_cancellation: a browser that goes away ends its event stream at once (its slot under
    # dashboard.max_event_streams is free again), not at the next keep-alive write
    runner = web.AppRunner(
        build_app(api, metrics=metrics, offsets=offsets),
        handle_signals=False,
        access_log=None,
        shutdown_timeout=5.0,
        handler_cancellation=True,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, bind, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise MonitorError(f"the dashboard cannot listen on {bind}:{port} ({exc}); change dashboard.port or bind") from exc
    return runner
