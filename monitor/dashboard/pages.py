"""The dashboard's HTML pages: small server-rendered shells that the page scripts fill from the API.

Every value placed in a page (site, machine, program and feature names, all of which may come
from a controller) goes through :func:`html.escape`; the scripts insert data with ``textContent``
only. The page scripts are files under ``static/`` (the Content-Security-Policy allows no inline
script).
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from string import Template
from urllib.parse import quote

from aiohttp import web

from monitor.dashboard.api import API_KEY

__all__ = ["add_page_routes", "render"]


@cache
def _template(name: str) -> Template:
    text = resources.files("monitor.dashboard").joinpath("templates", name).read_text(encoding="utf-8")
    return Template(text)


def render(page: str, *, site: str, title: str, heading: str, values: dict[str, str] | None = None) -> str:
    """The page ``page`` (templates/<page>.html inside templates/page.html), every value escaped.

    >>> "<b>" in render("cell", site="<b>", title="t", heading="h")
    False
    """
    values = values or {}
    esc = {k: html.escape(v, quote=True) for k, v in values.items()}
    esc.update({f"{k}_q": html.escape(quote(v, safe=""), quote=True) for k, v in values.items()})
    content = _template(f"{page}.html").substitute(esc)
    data = " ".join(f'data-{k}="{v}"' for k, v in esc.items() if not k.endswith("_q"))
    scripts = f'<script src="/static/{page}.js"></script>'
    if page == "feature":
        scripts = '<script src="/static/vendor/plotly.min.js"></script>\n' + scripts
    return _template("page.html").substitute(
        title=html.escape(title),
        site=html.escape(site),
        page=page,
        data=data,
        heading=html.escape(heading),
        content=content,
        scripts=scripts,
    )


def _page(request: web.Request, page: str, title: str, heading: str, values: dict[str, str] | None = None) -> web.Response:
    site = request.app[API_KEY].site.config.site
    return web.Response(text=render(page, site=site, title=title, heading=heading, values=values), content_type="text/html")


def _not_found(message: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=message, content_type="text/plain")


async def _cell(request: web.Request) -> web.Response:
    site = request.app[API_KEY].site.config.site
    return _page(request, "cell", "Cell", f"Cell {site}")


async def _machine(request: web.Request) -> web.Response:
    machine = request.query.get("id", "")
    if machine not in request.app[API_KEY].site.machine_ids():
        raise _not_found(f"no machine {machine!r} in this site")
    return _page(request, "machine", machine, f"Machine {machine}", {"machine": machine})


async def _feature(request: web.Request) -> web.Response:
    q = request.query
    machine, program, feature = q.get("machine", ""), q.get("program", ""), q.get("feature", "")
    site = request.app[API_KEY].site
    if machine not in site.machine_ids():
        raise _not_found(f"no machine {machine!r} in this site")
    config = site.programs.get(program)
    if config is None or feature not in {f.name for f in config.feature_models()}:
        raise _not_found(f"program {program!r} has no feature {feature!r} in this site")
    return _page(
        request, "feature", f"{feature} · {program}", f"{feature}", {"machine": machine, "program": program, "feature": feature}
    )


async def _alerts(request: web.Request) -> web.Response:
    return _page(request, "alerts", "Alerts", "Alerts")


async def _plant(request: web.Request) -> web.Response:
    return _page(request, "plant", "Plant", "Plant: every cell of the store")


def add_page_routes(app: web.Application) -> None:
    """Register the pages."""
    app.router.add_get("/", _cell)
    app.router.add_get("/machine", _machine)
    app.router.add_get("/feature", _feature)
    app.router.add_get("/alerts", _alerts)
    app.router.add_get("/plant", _plant)
