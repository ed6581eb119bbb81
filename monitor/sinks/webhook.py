"""The webhook sink: every alert state change POSTed as signed JSON to one HTTP endpoint.

The body is the one notification document of :mod:`monitor.sinks.payload` (the same bytes MQTT
carries). Headers (``docs/notifications.md``):

- ``X-Monitor-Signature: sha256=<hex>``: HMAC-SHA256 of the raw body with the configured secret,
  so the receiver can check that the body came from us and was not changed;
- ``X-Monitor-Timestamp``: Unix seconds of this delivery attempt;
- ``X-Monitor-Delivery``: ``<alert id>/<state>/<alert time>``, the same on every retry, for
  de-duplication.

One POST per alert change (the :class:`~monitor.sinks.base.RunningSink` runs with batches of one,
:meth:`~monitor.sinks.config.OutputConfig.batch_events`, so a failure never re-sends changes that
were already accepted). Failures map to
:class:`SinkError`: connection errors, timeouts, 408, 429 and 5xx are retryable (429/503 with
``Retry-After`` honoured through :class:`RetryAfterError`); any other status, redirects included
(they are not followed), is a refusal that will not change by retrying and is set aside.
Messages name the endpoint by scheme and host only: chat webhook URLs carry their secret in the path.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import urllib.parse
from collections.abc import Sequence
from typing import Self

import aiohttp

from monitor.errors import SinkError
from monitor.model import Alert
from monitor.retry import retry_after_s
from monitor.sinks.base import RetryAfterError, SinkContext, SinkEvent
from monitor.sinks.config import WebhookConfig
from monitor.sinks.payload import alert_payload, encode_payload

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookSink",
    "is_alert",
    "sign",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Monitor-Signature"
TIMESTAMP_HEADER = "X-Monitor-Timestamp"
DELIVERY_HEADER = "X-Monitor-Delivery"
_RETRYABLE = frozenset({408, 425, 429})
_USER_AGENT = "cnc-drift-monitor webhook/1"


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value for ``body``.

    >>> sign(b"k", b'{"a":1}')
    'sha256=c3a92ff9e274cdcce27a58c15a78ec6dcbbdbd0038a87e7a11baef2028fd8bff'
    """
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def is_alert(event: SinkEvent) -> bool:
    """The webhook's admit filter: alert changes only."""
    return isinstance(event, Alert)


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


class WebhookSink:
    """POSTs each alert change in a batch, in order (see the module docstring)."""

    def __init__(self, config: WebhookConfig, site: str, *, name: str = "webhook") -> None:
        self.name = name
        self.config = config
        self.site = site
        self.endpoint = _origin(config.url)
        self._secret = config.secret.get_secret_value().encode() if config.secret is not None else None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @classmethod
    def from_config(cls, config: WebhookConfig, context: SinkContext) -> Self:
        """The sink one entry of the site's ``sinks.webhooks`` describes."""
        return cls(config, context.site, name=context.name)

    def admits(self, event: SinkEvent) -> bool:
        """Alert changes only."""
        return is_alert(event)

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never appear in a message: the URL (path tokens), the secret, header values."""
        out = [self.config.url, *self.config.headers.values()]
        if self.config.secret is not None:
            out.append(self.config.secret.get_secret_value())
        return tuple(out)

    def __repr__(self) -> str:
        return f"WebhookSink({self.endpoint!r}, name={self.name!r})"

    def request(self, alert: Alert, now: float | None = None) -> tuple[bytes, dict[str, str]]:
        """The body and headers of the POST for one alert change."""
        body = encode_payload(alert_payload(alert, self.site))
        headers = {
            **self.config.headers,
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": _USER_AGENT,
            TIMESTAMP_HEADER: str(int(time.time() if now is None else now)),
            DELIVERY_HEADER: f"{alert.id}/{alert.state.value}/{alert.time.isoformat()}",
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        return body, headers

    async def write(self, batch: Sequence[SinkEvent]) -> None:
        if self._closed:
            raise SinkError(f"webhook {self.endpoint}: sink is closed", retryable=False)
        for event in batch:
            if isinstance(event, Alert):
                await self._post(event)

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _post(self, alert: Alert) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.config.verify_ssl),
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            )
        body, headers = self.request(alert)
        try:
            # No redirects: a signed alert is never re-sent to a host the configuration did not name.
            async with self._session.post(self.config.url, data=body, headers=headers, allow_redirects=False) as resp:
                if resp.status < 300:
                    await resp.read()
                    return
                detail = (await resp.text(errors="replace"))[:200].replace("\n", " ")
                status, retry_header = resp.status, resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            kind = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}"
            raise SinkError(f"webhook {self.endpoint}: {kind}", retryable=True) from exc
        message = f"webhook {self.endpoint}: HTTP {status}" + (f": {detail}" if detail else "")
        if status in _RETRYABLE or status >= 500:
            raise RetryAfterError(message, retry_after=retry_after_s(retry_header))
        if 300 <= status < 400:
            message += " (redirects are not followed: configure the final URL)"
        raise SinkError(message + " (not retried; fix the endpoint or its configuration)", retryable=False)
