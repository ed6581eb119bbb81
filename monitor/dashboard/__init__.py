"""The web dashboard the daemon serves: pages, a JSON API under ``/api/`` and live server-sent events.

Start it with :func:`monitor.dashboard.server.serve_dashboard`.
"""

__all__: list[str] = []
