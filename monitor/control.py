"""The daemon's local control API: how the command line reaches the running core, dashboard or not.

The daemon always serves it, on 127.0.0.1 at a port chosen at bind, whatever the dashboard
settings (it is not a web page: nothing to disable). Its URL and a random token made for this run
are in the runtime file (:mod:`monitor.runtime`), which only the daemon's user can read; requests
carry ``Authorization: Bearer <token>``. Whoever can read that file could write the store anyway:
the token only keeps other local users out.

Endpoints (JSON)::

    GET  /status                  the core's status (machines, sources, outputs, counters)
    POST /alerts/{id}/ack         acknowledge; 404 when there is no open, unacknowledged alert {id}
    POST /alerts/{id}/close       close; 404 when there is no open alert {id}
    POST /actions                 record an action ({"kind": "offset_applied", ...}: monitor.commands)
    POST /reload                  re-read the site and program files; what changed, or why refused
    POST /conditions/{id}/offset  write the condition's offset advice to the controller (docs/offsets.md):
                                  {"value", "axis", "expected", "comment"}; answers when written or refused

A change may carry ``{"token": "<the user's token>", "comment": "..."}``: the token names the user
(``users:`` of the site file); without one the change is the "local" user's, which only a site
without named users accepts. Answers: the alert (ack, close) or ``{"alert": ..., "action": ...}``;
400 for an action naming what does not exist, 403 for a role that may not do it.

Through this API a person's change goes to the core, the one writer of alert state, so it can
never race the detectors (an acknowledgement written to the store behind a running daemon's back
was overwritten by the next escalation).
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from monitor.codec import action_from_dict, action_to_dict, alert_from_dict, alert_to_dict, json_safe
from monitor.commands import (
    Acknowledge,
    ApplyOffset,
    CloseAlert,
    Command,
    OffsetApply,
    Outcome,
    RecordAction,
    action_command,
    apply_offset_command,
    command_to_dict,
)
from monitor.core import MonitorApi
from monitor.errors import ActionError, MonitorError, NotAllowed
from monitor.users import User, cli_user

__all__ = [
    "API_KEY",
    "OFFSET_KEY",
    "RELOAD_KEY",
    "TOKEN_KEY",
    "ControlClient",
    "DaemonUnreachable",
    "OffsetApply",
    "Reload",
    "build_control_app",
    "new_token",
    "serve_control",
]

API_KEY: web.AppKey[MonitorApi] = web.AppKey("monitor")
TOKEN_KEY: web.AppKey[str] = web.AppKey("control-token")
RELOAD_KEY: web.AppKey[Reload | None] = web.AppKey("reload")
_TIMEOUT_S = 60.0
"""A reload solves detection plans: allow it time (status and alert changes answer at once)."""

Reload = Callable[[], Awaitable[dict[str, Any]]]
"""The daemon's reload: re-read the configuration, return what changed (or why it was refused)."""

OFFSET_KEY: web.AppKey[OffsetApply | None] = web.AppKey("offsets")


class DaemonUnreachable(MonitorError):
    """The daemon's control API does not answer (it stopped, or is not listening yet)."""


def new_token() -> str:
    """A fresh random token for one run of the daemon."""
    return secrets.token_urlsafe(32)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.json_response(json_safe(obj), status=status, dumps=lambda o: json.dumps(o, allow_nan=False, default=str))


@web.middleware
async def _authorize(request: web.Request, handler: Any) -> web.StreamResponse:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), request.app[TOKEN_KEY].encode()):
        return _json({"error": "this is the daemon's local control API; use the token from its runtime file"}, 401)
    response: web.StreamResponse = await handler(request)
    return response


async def _status(request: web.Request) -> web.Response:
    return _json(await request.app[API_KEY].status())


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "the body must be a JSON object"}', content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "the body must be a JSON object"}', content_type="application/json")
    return body


def _who(request: web.Request, body: dict[str, Any]) -> User:
    token = body.pop("token", None)
    return cli_user(request.app[API_KEY].site, token if isinstance(token, str) else None)


def _outcome(outcome: Outcome) -> dict[str, Any]:
    return {
        "alert": alert_to_dict(outcome.alert) if outcome.alert is not None else None,
        "action": action_to_dict(outcome.action) if outcome.action is not None else None,
    }


async def _run(request: web.Request, make: Any) -> web.Response:
    body = await _body(request)
    try:
        command = make(body, _who(request, body))
        outcome = await request.app[API_KEY].execute(command)
    except NotAllowed as exc:
        return _json({"error": str(exc)}, 403)
    except ActionError as exc:
        return _json({"error": str(exc)}, 400)
    if isinstance(command, RecordAction):
        return _json(_outcome(outcome))
    if outcome.alert is None:
        what = "open alert" if isinstance(command, CloseAlert) else "open, unacknowledged alert"
        return _json({"error": f"no {what} {command.alert_id!r}"}, 404)
    return _json(_outcome(outcome))


def _comment(body: dict[str, Any]) -> str:
    comment = body.get("comment", "")
    if not isinstance(comment, str):
        raise ActionError("comment must be text")
    return comment


async def _ack(request: web.Request) -> web.Response:
    alert_id = request.match_info["alert_id"]
    return await _run(request, lambda body, user: Acknowledge(alert_id, user, _comment(body), "cli"))


async def _close(request: web.Request) -> web.Response:
    alert_id = request.match_info["alert_id"]
    return await _run(request, lambda body, user: CloseAlert(alert_id, user, _comment(body), "cli"))


async def _action(request: web.Request) -> web.Response:
    return await _run(request, lambda body, user: action_command(body, user, "cli"))


async def _offset(request: web.Request) -> web.Response:
    apply = request.app[OFFSET_KEY]
    if apply is None:
        return _json({"error": "this daemon does not write offsets"}, 404)
    body = await _body(request)
    try:
        command = apply_offset_command(request.match_info["alert_id"], body, _who(request, body), "cli")
        outcomes = await apply(command)
    except NotAllowed as exc:
        return _json({"error": str(exc)}, 403)
    except ActionError as exc:
        return _json({"error": str(exc)}, 400)
    return _json({"outcomes": outcomes})


async def _reload(request: web.Request) -> web.Response:
    reload = request.app[RELOAD_KEY]
    if reload is None:
        return _json({"error": "this daemon cannot reload its configuration"}, 404)
    return _json(await reload())


def build_control_app(
    api: MonitorApi, token: str, *, reload: Reload | None = None, offsets: OffsetApply | None = None
) -> web.Application:
    """The control application for ``api``; ``reload`` (the daemon's) serves ``POST /reload``,
    ``offsets`` (the daemon's offset service) ``POST /conditions/{id}/offset``."""
    app = web.Application(middlewares=[_authorize])
    app[API_KEY] = api
    app[TOKEN_KEY] = token
    app[RELOAD_KEY] = reload
    app[OFFSET_KEY] = offsets
    app.router.add_get("/status", _status)
    app.router.add_post("/alerts/{alert_id:.+}/ack", _ack)
    app.router.add_post("/alerts/{alert_id:.+}/close", _close)
    app.router.add_post("/actions", _action)
    app.router.add_post("/reload", _reload)
    app.router.add_post("/conditions/{alert_id:.+}/offset", _offset)
    return app


async def serve_control(
    api: MonitorApi, token: str, *, reload: Reload | None = None, offsets: OffsetApply | None = None
) -> tuple[web.AppRunner, str]:
    """Start the control API on 127.0.0.1 (a free port); returns the runner and its base URL."""
    app = build_control_app(api, token, reload=reload, offsets=offsets)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise MonitorError(f"the daemon's control API cannot listen on 127.0.0.1 ({exc})") from exc
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/"


class ControlClient:
    """The command line's side of the control API."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self._headers = {"Authorization": f"Bearer {token}"}

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout_s: float = _TIMEOUT_S
    ) -> tuple[int, Any]:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
                session.request(method, self.url + path, json=body, headers=self._headers) as resp,
            ):
                return resp.status, await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            why = str(exc) or type(exc).__name__
            raise DaemonUnreachable(f"the daemon's control API at {self.url} does not answer ({why})") from exc

    async def status(self) -> dict[str, Any]:
        code, body = await self._request("GET", "status")
        if code != 200 or not isinstance(body, dict):
            raise MonitorError(f"the daemon refused the status request ({code}): {body}")
        return body

    async def reload(self) -> dict[str, Any]:
        """Ask the daemon to reload its configuration; what changed, or the problems that refused it."""
        code, body = await self._request("POST", "reload")
        if code != 200 or not isinstance(body, dict):
            raise MonitorError(f"the daemon refused the reload request ({code}): {body}")
        return body

    async def apply_offset(self, command: ApplyOffset, token: str | None = None, *, timeout_s: float) -> list[dict[str, Any]]:
        """Have the daemon write a condition's offset advice; each register's outcome (written or
        refused, recorded either way). Waits up to ``timeout_s`` (the machine may be mid-part)."""
        body: dict[str, Any] = {"comment": command.comment}
        for name in ("value", "axis", "expected"):
            if getattr(command, name) is not None:
                body[name] = getattr(command, name)
        if token:
            body["token"] = token
        path = f"conditions/{quote(command.alert_id, safe='')}/offset"
        code, answer = await self._request("POST", path, body, timeout_s=timeout_s)
        error = str(answer.get("error") if isinstance(answer, dict) else answer)
        if code == 403:
            raise NotAllowed(error)
        if code == 400:
            raise ActionError(error)
        if code != 200 or not isinstance(answer, dict) or not isinstance(answer.get("outcomes"), list):
            raise MonitorError(f"the daemon refused ({code}): {error}")
        outcomes: list[dict[str, Any]] = answer["outcomes"]
        return outcomes

    async def execute(self, command: Command, token: str | None = None) -> Outcome:
        """Send a person's change to the core (``token``: the user's); ``Outcome(None, None)`` when an
        acknowledgement or close does not apply; ActionError/NotAllowed when the daemon refuses."""
        body = command_to_dict(command)
        if token:
            body["token"] = token
        if isinstance(command, RecordAction):
            path = "actions"
        else:
            verb = "ack" if isinstance(command, Acknowledge) else "close"
            path = f"alerts/{quote(command.alert_id, safe='')}/{verb}"
            body.pop("alert_id")
        code, answer = await self._request("POST", path, body)
        if code == 404 and not isinstance(command, RecordAction):
            return Outcome(None, None)
        if code == 403:
            raise NotAllowed(str(answer.get("error") if isinstance(answer, dict) else answer))
        if code == 400:
            raise ActionError(str(answer.get("error") if isinstance(answer, dict) else answer))
        if code != 200 or not isinstance(answer, dict):
            raise MonitorError(f"the daemon refused ({code}): {answer}")
        alert, action = answer.get("alert"), answer.get("action")
        return Outcome(
            alert_from_dict(alert) if isinstance(alert, dict) else None,
            action_from_dict(action) if isinstance(action, dict) else None,
        )
