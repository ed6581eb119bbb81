"""Who is acting: named users with a role and a token of their own, and what each role may do.

The site file lists users (``users: {alice: {role: engineer, token: ${MONITOR_TOKEN_ALICE}}}``); the
token comes from the environment. The dashboard takes it as a bearer token, the command line from
``$MONITOR_TOKEN``. A site without users keeps working as before: the dashboard's shared
``dashboard.token`` acts as the user "dashboard" (operator) and the command line on the daemon's
machine as "local" (engineer), since whoever can run it there can write the store anyway.

Operators acknowledge, comment and record what they did (offset applied, tool changed, part
quarantined); engineers may also close a condition by hand and decide what becomes of a part
(scrapped, reworked, accepted on concession: a material-review decision, not the operator's). Issue 18 (offsets written to the
controller) requires the engineer role through :func:`authorize` with ``WRITE_OFFSET``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING

from monitor.errors import NotAllowed
from monitor.model import ActionKind, Role

if TYPE_CHECKING:
    from monitor.config import Site

__all__ = ["DASHBOARD_USER", "LOCAL_USER", "PERMISSIONS", "WRITE_OFFSET", "User", "authorize", "cli_user", "user_for_token"]

WRITE_OFFSET = "write_offset"
"""Having the monitor write an offset to the controller (issue 18): engineers only."""


@dataclass(frozen=True, slots=True)
class User:
    """A person acting through the dashboard or the command line."""

    name: str
    role: Role


DASHBOARD_USER = User("dashboard", Role.OPERATOR)
"""Who holds the site's shared ``dashboard.token`` (kept for sites without named users)."""
LOCAL_USER = User("local", Role.ENGINEER)
"""The command line on the daemon's machine of a site without named users."""

_OPERATOR = frozenset(
    {
        ActionKind.ACKNOWLEDGE,
        ActionKind.COMMENT,
        ActionKind.OFFSET_APPLIED,
        ActionKind.OFFSET_REFUSED,  # recording that a write was refused (an operator's request included)
        ActionKind.TOOL_CHANGED,
        ActionKind.PART_QUARANTINED,
    }
)
PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.OPERATOR: frozenset(str(k) for k in _OPERATOR),
    Role.ENGINEER: frozenset({*(str(k) for k in ActionKind), WRITE_OFFSET}),
}
"""What each role may do: action kinds, and ``write_offset``."""


def authorize(user: User, what: ActionKind | str) -> None:
    """Raise :class:`NotAllowed` unless ``user``'s role allows ``what``."""
    if str(what) not in PERMISSIONS[user.role]:
        allowed = sorted(r for r, perms in PERMISSIONS.items() if str(what) in perms)
        raise NotAllowed(
            f"{user.name} ({user.role}) may not {str(what).replace('_', ' ')}; that needs the role {', '.join(allowed)}"
        )


def user_for_token(site: Site, token: str) -> User | None:
    """The named user whose token this is, the dashboard user for the shared dashboard token, or None."""
    given = token.strip().encode()
    found: User | None = None
    for name, cfg in site.config.users.items():
        if hmac.compare_digest(given, cfg.token.encode()):  # every token is compared: no early exit
            found = User(name, cfg.role)
    shared = site.config.dashboard.token
    if found is None and shared and hmac.compare_digest(given, shared.encode()):
        found = DASHBOARD_USER
    return found


def cli_user(site: Site, token: str | None) -> User:
    """Who runs the command line: the user of ``token`` ($MONITOR_TOKEN); "local" on a site without users."""
    if token:
        user = user_for_token(site, token)
        if user is None:
            raise NotAllowed("MONITOR_TOKEN matches no user of this site; check the token (users: in the site file)")
        return user
    if site.config.users:
        raise NotAllowed("this site names its users: set MONITOR_TOKEN to your token so the action is recorded with your name")
    return LOCAL_USER
