"""The offset tests' machine: a secure simulated CNC (one mill, tool 12, G54 and T12's wear
registers writable by the user "engineer"), a site file that reads it over SignAndEncrypt and may
write two registers, users alice (engineer) and bob (operator), and parts made through the simulated
physics of the registers. Shared by tests/test_offset_apply.py and the dashboard's browser test."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from monitor.events import HubEvent
from monitor.sim.cell import SimEvent
from monitor.sim.closedloop import ClosedLoop, Effect
from monitor.sim.opcua_server import MachineShape, default_registers, register_entries, signal_map
from tests.daemons import RunningDaemon
from tests.opcua.helpers import Pki, make_pki, secure_source

ALICE, BOB = "alice-4f8e2a9c71d3b6", "bob-93c1e7a5f20d8b4"
SHAPE = MachineShape(
    "vmc-01", probes=("hole1_x", "hole1_y", "hole1_dia", "hole2_x", "hole2_y"), tools=(12,), registers=default_registers([12])
)
DWEAR, G54X = "ToolOffsets.T12.DiameterWear", "Offsets.G54.X"
T0 = datetime(2031, 1, 1, tzinfo=UTC)
PROGRAM = """\
program: O1001
part_end: part_count
features:
  hole1_dia:
    kind: size
    signal: probe.hole1_dia
    nominal: 10.0
    lower: 9.99
    upper: 10.01
    form: inside
    offset: {register: tool_diameter_wear, tool: T12}
  hole1_pos:
    kind: position
    x: {signal: probe.hole1_x, nominal: 25.0}
    y: {signal: probe.hole1_y, nominal: 40.0}
    tolerance: 0.05
  hole2_pos:
    kind: position
    x: {signal: probe.hole2_x, nominal: 75.0}
    y: {signal: probe.hole2_y, nominal: 40.0}
    tolerance: 0.05
"""


USERS = {"reader": "r3ad-only", "engineer": "wr1te-s3cret"}
"""The simulated controller's OPC UA users: the monitor reads as "reader", writes as "engineer"."""
ENV = {
    "SIM_READER": "reader",
    "SIM_READER_PASSWORD": "r3ad-only",
    "SIM_WRITER": "engineer",
    "SIM_WRITER_PASSWORD": "wr1te-s3cret",
    "MONITOR_TOKEN_ALICE": ALICE,
    "MONITOR_TOKEN_BOB": BOB,
}
"""What the site file reads from the environment (OPC UA users, the people's tokens)."""


def offsets_pki(root: Path) -> Pki:
    """Certificates and users of the secure simulated CNC (only "engineer" may write)."""
    return make_pki(root, USERS, writers=frozenset({"engineer"}))


@contextlib.contextmanager
def offset_env() -> Iterator[None]:
    """:data:`ENV` in this process's environment for the block (restored after)."""
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def write_site(tmp: Path, endpoint: str, pki: Pki | None, *, dashboard: bool = False) -> Path:
    """The site file (with program O1001) that reads and writes the simulated CNC at ``endpoint``,
    over SignAndEncrypt with ``pki``'s client (None: security None)."""
    (tmp / "programs").mkdir(exist_ok=True)
    (tmp / "programs" / "O1001.yaml").write_text(PROGRAM, encoding="utf-8")
    limits = {"max_change": 0.03, "max_batch_change": 0.04}
    reader = {"username_env": "SIM_READER", "password_env": "SIM_READER_PASSWORD"}
    source = {
        "type": "opcua",
        "endpoint": endpoint,
        **(secure_source(pki, endpoint, **reader) if pki is not None else reader),
        "publishing_interval_ms": 50,
        "sampling_interval_ms": 10,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
    }
    site = {
        "site": "offset-test",
        "store": {"path": "monitor.db"},
        "dashboard": {"enabled": dashboard, "port": 0},
        "users": {
            "alice": {"role": "engineer", "token": "${MONITOR_TOKEN_ALICE}"},
            "bob": {"role": "operator", "token": "${MONITOR_TOKEN_BOB}"},
        },
        "machines": [
            {
                "id": SHAPE.id,
                "kind": "mill",
                "source": source,
                "signals": signal_map(SHAPE),
                "tracking": {"grace_s": 0.5},
                "offsets": {
                    "username_env": "SIM_WRITER",
                    "password_env": "SIM_WRITER_PASSWORD",
                    "registers": register_entries(SHAPE.id, [G54X, DWEAR], **limits),
                },
            }
        ],
    }
    path = tmp / "site.yaml"
    path.write_text(json.dumps(site), encoding="utf-8")  # JSON is YAML
    return path


EFFECTS = [
    Effect(DWEAR, "probe.hole1_dia", -1.0),  # D-wear +1 per mm of a bore too big: the bore shrinks by the change
    Effect(G54X, "probe.hole1_x", 1.0),  # the work offset moves the part zero, and the holes with it
    Effect(G54X, "probe.hole2_x", 1.0),
]


async def make_part(loop: ClosedLoop, n: int, *, dia: float = 10.001, x: float = 25.002) -> None:
    """One part of O1001 as the controller shows it: running, probed, counted, between parts; the
    process makes ``dia`` and ``x``, the machine's registers move them (the simulated physics)."""
    t = T0 + timedelta(seconds=20 * n)
    await loop.publish(SimEvent(t, SHAPE.id, "execution", "ACTIVE"))
    for i, (signal, value) in enumerate(
        [("hole1_dia", dia), ("hole1_x", x), ("hole1_y", 39.999), ("hole2_x", 75.001), ("hole2_y", 40.0)]
    ):
        await loop.publish(SimEvent(t + timedelta(seconds=5 + i * 0.1), SHAPE.id, f"probe.{signal}", value))
    await loop.publish(SimEvent(t + timedelta(seconds=6), SHAPE.id, "part.count", float(n)))
    await loop.publish(SimEvent(t + timedelta(seconds=6.5), SHAPE.id, "execution", "READY"))


async def bore_out_of_tolerance(running: RunningDaemon, loop: ClosedLoop) -> HubEvent:
    """Five good parts, then a bore 20 um over nominal: the event of hole1_dia's condition going out of tolerance."""
    for n in range(1, 6):
        await make_part(loop, n)
    await make_part(loop, 6, dia=10.02)
    return await running.until(is_condition("hole1_dia", "out_of_tolerance"), timeout_s=60)


def CONNECTED(event: HubEvent) -> bool:  # noqa: N802  (a predicate named like the state it waits for)
    return event.kind == "machine" and event.data.get("connection") == "connected"


def is_condition(feature: str, condition: str) -> Any:
    def check(event: HubEvent) -> bool:
        return event.kind == "alert" and event.data["feature"] == feature and event.data.get("condition") == condition

    return check
