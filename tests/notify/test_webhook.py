"""The webhook sink against a real local aiohttp receiver: retries, Retry-After, refusals, timeouts, signatures."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from monitor.model import AlertState, Observation
from monitor.sinks.base import RunningSink, SinkContext
from monitor.sinks.config import WebhookConfig
from monitor.sinks.payload import SCHEMA
from monitor.sinks.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSink
from tests.notify.conftest import T0, make_alert, running, wait_until

SECRET = "whsec-test-6f1c"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "notifications.md"


@dataclass
class Attempt:
    at: float
    body: bytes
    headers: dict[str, str]


@dataclass
class Receiver:
    """An HTTP endpoint whose answers are scripted: ``plan`` gives the reply to each attempt in turn."""

    plan: list[Callable[[Receiver], Awaitable[web.StreamResponse]]] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    replies: list[int] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.attempts.append(Attempt(time.monotonic(), body, dict(request.headers)))
        reply = self.plan.pop(0) if self.plan else ok
        return await reply(self)


async def ok(rx: Receiver) -> web.Response:
    rx.replies.append(200)
    return web.Response(status=200, text="ok")


def status(code: int, retry_after: str | None = None) -> Callable[[Receiver], Any]:
    async def reply(rx: Receiver) -> web.Response:
        rx.replies.append(code)
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return web.Response(status=code, text=f"scripted {code}", headers=headers)

    return reply


async def stall(rx: Receiver) -> web.Response:
    rx.replies.append(0)
    await rx.release.wait()  # until the test ends: the client's timeout must fire first
    return web.Response(status=200)


@contextlib.asynccontextmanager
async def receiving(*plan: Callable[[Receiver], Any]) -> AsyncIterator[Receiver]:
    rx = Receiver(plan=list(plan))
    app = web.Application()
    app.router.add_post("/hooks/{token}", rx.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rx.url = f"http://127.0.0.1:{port}/hooks/T0K3N-in-path"
    try:
        yield rx
    finally:
        rx.release.set()
        await runner.cleanup()


def _sink(url: str, tmp_path: Path, **kw: Any) -> RunningSink:
    config = WebhookConfig.model_validate({"url": url, "secret": SECRET, "retry_initial_s": 0.05, "retry_max_s": 0.2, **kw})
    sink = RunningSink.for_output(WebhookSink.from_config(config, SinkContext("cell-3", "webhook")), config, base_dir=tmp_path)
    sink._rng = random.Random(5)
    return sink


def _verify(secret: str, body: bytes, header: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


async def test_delivered_once_after_failed_attempts_and_signature_verifies(tmp_path: Path) -> None:
    async with receiving(status(500), status(429, retry_after="1"), status(503)) as rx:
        sink = _sink(rx.url, tmp_path)
        async with running(sink):
            sink.offer(Observation("vmc-01", "spindle.load", T0, 40.0))  # not an alert: filtered
            sink.offer(make_alert(1))
            await wait_until(lambda: sink.written == 1)
            sink.offer(make_alert(1, state=AlertState.CLOSED))
            await wait_until(lambda: sink.written == 2)

    assert rx.replies == [500, 429, 503, 200, 200]
    first = rx.attempts[:4]
    assert len({a.body for a in first}) == 1  # every retry sends the same bytes
    assert first[2].at - first[1].at >= 1.0  # Retry-After: 1 honoured (backoff alone is <= 0.2 s)
    for attempt in rx.attempts:
        assert _verify(SECRET, attempt.body, attempt.headers[SIGNATURE_HEADER])
        assert abs(int(attempt.headers[TIMESTAMP_HEADER]) - time.time()) < 60
        assert attempt.headers["Content-Type"].startswith("application/json")
    doc = json.loads(rx.attempts[3].body)
    assert doc["schema"] == SCHEMA and doc["site"] == "cell-3" and doc["id"] == "a1" and doc["state"] == "open"
    assert doc["text"].startswith("WARNING open: cell-3/vmc-01 O1234 hole1_pos part 11:")
    assert rx.attempts[3].headers[DELIVERY_HEADER] == f"a1/open/{doc['time']}"
    assert json.loads(rx.attempts[4].body)["state"] == "closed"
    status_ = sink.status()
    assert status_["written"] == 2 and status_["retries"] == 3 and status_["filtered"] == 1
    assert "T0K3N" not in json.dumps(status_) and SECRET not in json.dumps(status_)  # path token redacted


async def test_a_tampered_body_does_not_verify(tmp_path: Path) -> None:
    async with receiving() as rx:
        sink = _sink(rx.url, tmp_path)
        async with running(sink):
            sink.offer(make_alert(2))
            await wait_until(lambda: sink.written == 1)
    attempt = rx.attempts[0]
    assert _verify(SECRET, attempt.body, attempt.headers[SIGNATURE_HEADER])
    assert not _verify(SECRET, attempt.body.replace(b"hole1_pos", b"hole2_pos"), attempt.headers[SIGNATURE_HEADER])
    assert not _verify("other-secret", attempt.body, attempt.headers[SIGNATURE_HEADER])


async def test_client_error_is_set_aside_and_the_next_alert_still_goes(tmp_path: Path) -> None:
    async with receiving(status(400), status(302)) as rx:
        sink = _sink(rx.url, tmp_path, spool_dir="spool")
        async with running(sink):
            sink.offer(make_alert(1))
            sink.offer(make_alert(2))
            sink.offer(make_alert(3))
            await wait_until(lambda: sink.written == 1)
    assert rx.replies == [400, 302, 200]
    assert sink.set_aside == 2 and sink.retries == 0
    assert json.loads(rx.attempts[2].body)["id"] == "a3"
    rejected = (tmp_path / "spool" / "rejected.jsonl").read_text()
    assert "HTTP 400" in rejected and "redirects are not followed" in rejected and "T0K3N" not in rejected


async def test_a_stalled_endpoint_times_out_and_is_retried(tmp_path: Path) -> None:
    async with receiving(stall) as rx:
        sink = _sink(rx.url, tmp_path, timeout_s=0.3)
        async with running(sink):
            sink.offer(make_alert(4))
            await wait_until(lambda: sink.written == 1)
    assert rx.replies == [0, 200]
    assert "timed out" in (sink.status()["last_error"] or "")


async def test_unreachable_endpoint_keeps_alerts_queued_until_it_answers(tmp_path: Path) -> None:
    sink = WebhookSink(WebhookConfig(url="http://127.0.0.1:9/x", secret=SecretStr("s")), "cell-3")
    from monitor.errors import SinkError

    with pytest.raises(SinkError) as info:
        await sink.write([make_alert(1)])
    await sink.aclose()
    assert info.value.retryable and "127.0.0.1:9" in str(info.value)


def test_documented_verification_example_accepts_our_signature() -> None:
    """The Python receiver snippet in docs/notifications.md must verify what the sink signs."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    code = next(b for b in blocks if "def verify_signature" in b)
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    sink = WebhookSink(WebhookConfig(url="https://example.invalid/hook", secret=SecretStr(SECRET)), "cell-3")
    body, headers = sink.request(make_alert(7), now=time.time())
    verify = namespace["verify_signature"]
    assert verify(SECRET.encode(), body, headers[SIGNATURE_HEADER])
    assert not verify(SECRET.encode(), body + b" ", headers[SIGNATURE_HEADER])
    assert not verify(b"wrong", body, headers[SIGNATURE_HEADER])
    # The documented example payload is a real one: same keys as what the sink sends.
    example = json.loads(re.findall(r"```json\n(.*?)```", DOCS.read_text(), flags=re.S)[0])
    assert set(example) == set(json.loads(body))


def test_site_file_builds_one_sink_per_webhook(tmp_path: Path) -> None:
    from monitor.config import load_site
    from monitor.plugins import build_sinks

    (tmp_path / "programs").mkdir()
    site_file = tmp_path / "site.yaml"
    site_file.write_text(
        "site: cell-3\n"
        "sinks:\n"
        "  webhooks:\n"
        "    - {url: 'https://hooks.example.com/a/${HOOK_TOKEN}', secret: '${WEBHOOK_SECRET}'}\n"
        "    - {url: 'http://relay.local:8080/alert', timeout_s: 2}\n"
    )
    site = load_site(site_file, environ={"HOOK_TOKEN": "tok-123", "WEBHOOK_SECRET": "sec-456"})
    hooks = [s for s in build_sinks(site) if s.name.startswith("webhook")]
    assert [h.name for h in hooks] == ["webhook-1", "webhook-2"]
    first = hooks[0].sink
    assert isinstance(first, WebhookSink) and first.endpoint == "https://hooks.example.com"
    assert any("tok-123" in s for s in first.secrets) and "sec-456" in first.secrets
    assert "sec-456" not in repr(site.config) and "tok-123" not in repr(first)
    assert hooks[0].batch_size == 1


def test_text_of_a_connection_alert_has_no_empty_program() -> None:
    from dataclasses import replace

    from monitor.model import AlertKind
    from monitor.sinks.payload import alert_text

    lost = replace(make_alert(3, feature="connection"), program="", kind=AlertKind.SIGNAL_LOST, message="lost\tlink")
    assert alert_text(lost, "cell-3") == "WARNING open: cell-3/vmc-01 connection part 13: lost link"
