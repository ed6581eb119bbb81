"""Offset writes against the simulated CNC over TCP: read, add, write, read back, and every refusal.

The simulator is a real asyncua server with SignAndEncrypt endpoints, user names and per-user write
rights; the writer is the product's :class:`adapters.opcua.offsets.OffsetWriter` built from a
machine entry validated as the site file's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio

from adapters.opcua.offsets import OffsetWriter
from monitor.config import OpcUaMachine
from monitor.errors import OffsetRefused
from monitor.sim.opcua_server import MachineShape, OpcUaSimServer, default_registers, register_entries, signal_map
from tests.opcua.helpers import Pki, make_pki

T0 = datetime(2031, 1, 1, tzinfo=UTC)
SHAPE = MachineShape("vmc-01", probes=("hole1_x", "hole1_y", "hole1_dia"), tools=(12,), registers=default_registers([12]))
G54X = "Offsets.G54.X"
DWEAR = "ToolOffsets.T12.DiameterWear"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    users = {"engineer": "wr1te-s3cret", "reader": "r3ad-only"}
    return make_pki(tmp_path_factory.mktemp("pki"), users, writers=frozenset({"engineer"}))


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secure_server(pki: Pki) -> AsyncIterator[OpcUaSimServer]:
    async with OpcUaSimServer([SHAPE], security=pki.server) as srv:
        yield srv


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def open_server() -> AsyncIterator[OpcUaSimServer]:
    async with OpcUaSimServer([SHAPE]) as srv:
        yield srv


async def _fresh(srv: OpcUaSimServer) -> OpcUaSimServer:
    """The server as a new test expects it: registers at 0, nothing written, between parts."""
    srv.alter_writes = None
    for path in SHAPE.registers:
        await srv.set_register(SHAPE.id, path, 0.0)
    srv.register_writes.clear()
    await srv.publish(SHAPE.id, "execution", "READY", T0)
    return srv


@pytest_asyncio.fixture(loop_scope="module")
async def secure_sim(secure_server: OpcUaSimServer) -> OpcUaSimServer:
    return await _fresh(secure_server)


@pytest_asyncio.fixture(loop_scope="module")
async def open_sim(open_server: OpcUaSimServer) -> OpcUaSimServer:
    return await _fresh(open_server)


@pytest.fixture
def engineer_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SIM_USER", "engineer")
    monkeypatch.setenv("SIM_PASSWORD", "wr1te-s3cret")
    monkeypatch.setenv("SIM_READER", "reader")
    monkeypatch.setenv("SIM_READER_PASSWORD", "r3ad-only")
    yield


def machine(endpoint: str, pki: Pki | None, *, offsets: dict[str, Any] | None = None, **registers: Any) -> OpcUaMachine:
    """A machine entry as a site file gives it: secure source with the engineer, writable G54 X and T12 D-wear."""
    source: dict[str, Any] = {"type": "opcua", "endpoint": endpoint, "request_timeout_s": 4.0}
    if pki is not None:
        source.update(
            security_policy="Basic256Sha256",
            security_mode="SignAndEncrypt",
            certificate=str(pki.client_cert),
            private_key=str(pki.client_key),
            trust_dir=str(pki.trust_dir),
            username_env="SIM_USER",
            password_env="SIM_PASSWORD",
        )
    limits = {"max_change": 0.02, "max_batch_change": 0.05, **registers}
    block: dict[str, Any] = {"registers": register_entries(SHAPE.id, [G54X, DWEAR], **limits)}
    block.update(offsets or {})
    return OpcUaMachine.model_validate({"id": SHAPE.id, "source": source, "signals": signal_map(SHAPE), "offsets": block})


def writer(m: OpcUaMachine) -> OffsetWriter:
    assert m.offsets is not None
    return OffsetWriter(m.id, m.source, m.offsets, m.signals)


async def test_apply_reads_adds_writes_and_verifies(secure_sim: OpcUaSimServer, pki: Pki, engineer_env: None) -> None:
    await secure_sim.set_register(SHAPE.id, G54X, 12.5)
    w = writer(machine(secure_sim.endpoint, pki))
    done = await w.apply("G54.X", -0.0123)
    assert (done.old_value, done.new_value, done.read_back) == (12.5, 12.4877, 12.4877)
    assert done.change == pytest.approx(-0.0123)
    assert done.security == "Basic256Sha256/SignAndEncrypt" and done.user == "engineer"
    assert secure_sim.register_value(SHAPE.id, G54X) == pytest.approx(12.4877)
    [written] = secure_sim.register_writes
    assert (written.register, written.user) == (G54X, "engineer")
    assert written.stored == pytest.approx(12.4877)
    assert await w.read("g54.x") == pytest.approx(12.4877)


async def test_inverted_register_and_resolution(secure_sim: OpcUaSimServer, pki: Pki, engineer_env: None) -> None:
    w = writer(machine(secure_sim.endpoint, pki, direction="inverted", resolution=0.001))
    done = await w.apply("T12.tool_diameter_wear", 0.0042)
    assert done.change == pytest.approx(0.004)  # rounded to the register's step
    assert done.new_value == pytest.approx(-0.004)
    assert secure_sim.register_value(SHAPE.id, DWEAR) == pytest.approx(-0.004)


@pytest.mark.parametrize(
    ("change", "applied", "automatic", "reason"),
    [
        (0.021, 0.0, False, "limit"),
        (-0.021, 0.0, False, "limit"),
        (0.006, 0.0, True, "limit"),  # auto limit: a quarter of max_change
        (0.015, 0.04, False, "batch_limit"),
        (0.00004, 0.0, False, "limit"),  # below the register's resolution
        (float("nan"), 0.0, False, "limit"),
    ],
)
async def test_limits_refuse_before_anything_is_written(
    secure_sim: OpcUaSimServer, pki: Pki, engineer_env: None, change: float, applied: float, automatic: bool, reason: str
) -> None:
    w = writer(machine(secure_sim.endpoint, pki))
    with pytest.raises(OffsetRefused) as err:
        await w.apply("G54.X", change, applied_in_batch=applied, automatic=automatic)
    assert err.value.reason == reason
    assert secure_sim.register_writes == []
    assert secure_sim.register_value(SHAPE.id, G54X) == 0.0


async def test_automatic_write_within_its_limit_over_signandencrypt(
    secure_sim: OpcUaSimServer, pki: Pki, engineer_env: None
) -> None:
    w = writer(machine(secure_sim.endpoint, pki))
    done = await w.apply("G54.X", 0.005, automatic=True)
    assert done.new_value == pytest.approx(0.005)


async def test_user_without_write_rights_is_refused(secure_sim: OpcUaSimServer, pki: Pki, engineer_env: None) -> None:
    m = machine(secure_sim.endpoint, pki, offsets={"username_env": "SIM_READER", "password_env": "SIM_READER_PASSWORD"})
    with pytest.raises(OffsetRefused) as err:
        await writer(m).apply("G54.X", 0.01)
    assert err.value.reason == "denied"
    assert "reader" in str(err.value) and "write rights" in str(err.value)
    assert secure_sim.register_value(SHAPE.id, G54X) == 0.0 and secure_sim.register_writes == []


async def test_insecure_connection_is_refused_unless_the_site_allows_it(open_sim: OpcUaSimServer) -> None:
    with pytest.raises(OffsetRefused) as err:
        await writer(machine(open_sim.endpoint, None)).apply("G54.X", 0.01)
    assert err.value.reason == "insecure" and "SignAndEncrypt" in str(err.value)
    allowed = writer(machine(open_sim.endpoint, None, offsets={"allow_insecure": True}))
    with pytest.raises(OffsetRefused) as auto:
        await allowed.apply("G54.X", 0.004, automatic=True)
    assert auto.value.reason == "insecure" and "automatic" in str(auto.value)
    assert open_sim.register_writes == []
    done = await allowed.apply("G54.X", 0.01)
    assert done.new_value == pytest.approx(0.01) and done.security == "None/None"


async def test_write_during_a_part_waits_and_lands_between_parts(
    secure_sim: OpcUaSimServer, pki: Pki, engineer_env: None
) -> None:
    await secure_sim.publish(SHAPE.id, "execution", "ACTIVE", T0)
    waiting = asyncio.Event()
    states: list[str] = []

    def on_wait(state: str) -> None:
        states.append(state)
        waiting.set()

    task = asyncio.create_task(writer(machine(secure_sim.endpoint, pki)).apply("G54.X", 0.01, on_wait=on_wait))
    await asyncio.wait_for(waiting.wait(), 20)
    assert states == ["ACTIVE"] and secure_sim.register_writes == []
    await secure_sim.publish(SHAPE.id, "execution", "INTERRUPTED", T0)  # feed hold: still mid-part
    await secure_sim.publish(SHAPE.id, "execution", "READY", T0)
    ready_at = datetime.now(UTC)
    done = await asyncio.wait_for(task, 20)
    assert done.new_value == pytest.approx(0.01)
    assert secure_sim.register_writes[0].time >= ready_at


async def test_machine_that_keeps_running_is_refused(secure_sim: OpcUaSimServer, pki: Pki, engineer_env: None) -> None:
    await secure_sim.publish(SHAPE.id, "execution", "ACTIVE", T0)
    m = machine(secure_sim.endpoint, pki, offsets={"between_parts": {"timeout_s": 0.5}})
    with pytest.raises(OffsetRefused) as err:
        await writer(m).apply("G54.X", 0.01)
    assert err.value.reason == "running"
    assert secure_sim.register_writes == []


async def test_register_edited_at_the_control_while_waiting_is_refused(
    secure_sim: OpcUaSimServer, pki: Pki, engineer_env: None
) -> None:
    await secure_sim.publish(SHAPE.id, "execution", "ACTIVE", T0)
    waiting = asyncio.Event()
    task = asyncio.create_task(writer(machine(secure_sim.endpoint, pki)).apply("G54.X", 0.01, on_wait=lambda _: waiting.set()))
    await asyncio.wait_for(waiting.wait(), 20)
    await secure_sim.set_register(SHAPE.id, G54X, 0.003)  # the machinist typed an offset meanwhile
    await secure_sim.publish(SHAPE.id, "execution", "READY", T0)
    with pytest.raises(OffsetRefused) as err:
        await asyncio.wait_for(task, 20)
    assert err.value.reason == "moved" and err.value.register_value == pytest.approx(0.003)
    assert secure_sim.register_value(SHAPE.id, G54X) == pytest.approx(0.003) and secure_sim.register_writes == []


async def test_stale_advice_is_refused_after_the_wait(secure_sim: OpcUaSimServer, pki: Pki, engineer_env: None) -> None:
    async def stale() -> None:
        raise OffsetRefused("stale", "the condition's advice changed")

    with pytest.raises(OffsetRefused) as err:
        await writer(machine(secure_sim.endpoint, pki)).apply("G54.X", 0.01, still_current=stale)
    assert err.value.reason == "stale" and secure_sim.register_writes == []


async def test_read_back_mismatch_is_undone_and_reported(secure_sim: OpcUaSimServer, pki: Pki, engineer_env: None) -> None:
    await secure_sim.set_register(SHAPE.id, G54X, 1.0)
    # a gateway that adds 1 um to what it forwards; the undo (1.0) is altered too, to 1.001
    secure_sim.alter_writes = lambda machine, register, value: value + 0.001 if value != 1.0 else value
    with pytest.raises(OffsetRefused) as err:
        await writer(machine(secure_sim.endpoint, pki)).apply("G54.X", 0.01)
    assert err.value.reason == "readback" and err.value.restored
    assert "read back 1.0110" in str(err.value)
    assert secure_sim.register_value(SHAPE.id, G54X) == pytest.approx(1.0)
    assert [w.stored for w in secure_sim.register_writes] == [pytest.approx(1.011), pytest.approx(1.0)]


async def test_read_back_mismatch_that_cannot_be_undone_says_so(secure_sim: OpcUaSimServer, pki: Pki, engineer_env: None) -> None:
    secure_sim.alter_writes = lambda machine, register, value: 0.5
    with pytest.raises(OffsetRefused) as err:
        await writer(machine(secure_sim.endpoint, pki)).apply("G54.X", 0.01)
    assert err.value.reason == "readback" and not err.value.restored
    assert "check it at the control" in str(err.value) and err.value.register_value == pytest.approx(0.5)


async def test_unknown_register_names_the_writable_ones(secure_sim: OpcUaSimServer, pki: Pki, engineer_env: None) -> None:
    with pytest.raises(OffsetRefused) as err:
        await writer(machine(secure_sim.endpoint, pki)).apply("G55.X", 0.01)
    assert err.value.reason == "unknown_register" and "G54.X, T12.tool_diameter_wear" in str(err.value)
