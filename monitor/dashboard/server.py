"""Serving the dashboard: builds the aiohttp application and starts it on a socket.

The daemon owns the lifetime: it calls :func:`serve_dashboard` once it is running and
``runner.cleanup()`` at shutdown.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

__all__ = ["build_app", "serve_dashboard"]


def build_app(daemon: Any) -> web.Application:
    """The dashboard application for ``daemon`` (a :class:`monitor.daemon.Daemon`)."""
    app = web.Application()

    async def _health(_: web.Request) -> web.Response:
        return web.json_response({"site": daemon.site.config.site})

    app.router.add_get("/api/health", _health)
    return app


async def serve_dashboard(daemon: Any, bind: str, port: int) -> web.AppRunner:
    """Start the dashboard on ``bind:port`` (0 = any free port); returns the started runner."""
    runner = web.AppRunner(build_app(daemon), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, bind, port)
    await site.start()
    return runner
