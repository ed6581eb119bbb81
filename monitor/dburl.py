"""Database URLs in site files: which backend a ``store:`` names, and never a password in them.

Shared by the site file's validation (monitor.config) and the store (monitor.store), which sit on
one layer and do not import each other.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["URL_SCHEMES", "check_url", "is_url", "redact"]

URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(target: object) -> bool:
    """True for a PostgreSQL connection URL (what ``store.url`` holds)."""
    return isinstance(target, str) and target.startswith(URL_SCHEMES)


def check_url(url: str) -> str:
    """``url`` if it is a PostgreSQL URL without a password; raises ValueError saying what to write."""
    if not is_url(url):
        raise ValueError(f"not a PostgreSQL URL: {redact(url)!r}; write postgresql://USER@HOST:PORT/DATABASE")
    parts = urlsplit(url)
    if parts.password is not None or any(k == "password" for k, _ in parse_qsl(parts.query)):
        raise ValueError(
            "the store URL carries a password; leave it out and set PGPASSWORD in the daemon's environment "
            "(or use ~/.pgpass): a site file is read by many and copied around"
        )
    return url


def redact(url: str) -> str:
    """The URL without any password, for logs, errors and status (anything else comes back as it is)."""
    if not is_url(url):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = urlencode([(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)], safe="/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
