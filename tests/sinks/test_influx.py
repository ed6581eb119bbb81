"""The InfluxDB sink against a real server (victoria-metrics speaking ``/api/v2/write``).

Points are read back through victoria-metrics' ``/api/v1/export``, where a line-protocol field
``f`` of measurement ``m`` becomes the series ``m_f`` with the point's tags as labels, timestamps
in milliseconds and string fields stored as 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

import monitor.sinks.influx as influx_module
from monitor.config import ProgramConfig
from monitor.model import (
    Alert,
    AlertKind,
    AlertState,
    Observation,
    PartRecord,
    PartStatus,
    Severity,
    SpindleStats,
    ToolUse,
)
from monitor.sinks.base import ProgramFeatures, RunningSink, SinkContext, SinkState
from monitor.sinks.config import InfluxConfig, RawSignalConfig
from monitor.sinks.influx import InfluxSink, PointEncoder, time_ns
from monitor.sinks.spool import REJECTED_FILE, Spool
from tests.servers.victoria import VictoriaMetrics

TOKEN = "tok-9f8e7d6c5b4a-SECRET"
PROGRAM = ProgramConfig.model_validate(
    {
        "program": "O1234",
        "features": {
            "hole1_pos": {
                "kind": "position",
                "x": {"signal": "probe.hole1_x", "nominal": 25.0},
                "y": {"signal": "probe.hole1_y", "nominal": 40.0},
                "tolerance": 0.05,
            },
            "hole1_dia": {"kind": "size", "signal": "probe.hole1_dia", "nominal": 10.0075, "lower": 10.0, "upper": 10.015},
        },
    }
)
PROGRAMS = {"O1234": PROGRAM}
# Recent timestamps: victoria-metrics keeps one month by default.
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def part(i: int, machine: str = "vmc-01") -> PartRecord:
    end = BASE + timedelta(seconds=10 * i + 9, milliseconds=123)
    return PartRecord(
        key=f"{machine}/O1234/{i}",
        machine=machine,
        program="O1234",
        part_number=i,
        start=end - timedelta(seconds=9),
        end=end,
        status=PartStatus.COMPLETE,
        measurements={"probe.hole1_x": 25.0 + 0.001 * i, "probe.hole1_y": 40.0 - 0.0005 * i, "probe.hole1_dia": 10.008},
        tools=(ToolUse("12", life_start=100.0 - i, life_end=99.5 - i, cutting_time=5.0),),
        spindle=SpindleStats(mean_load=40.0 + i, peak_load=80.0, cutting_time=5.0, energy=200.0),
        counter=i,
    )


def ms(t: datetime) -> int:
    return time_ns(t) // 1_000_000


def _running(cfg: InfluxConfig, programs: Mapping[str, ProgramFeatures], *, base_dir: Path) -> RunningSink:
    return RunningSink.for_output(InfluxSink.from_config(cfg, SinkContext("cell-3", "influx", programs)), cfg, base_dir=base_dir)


def config(server_url: str, tmp_path: Path, **overrides: Any) -> InfluxConfig:
    values: dict[str, Any] = {
        "url": server_url,
        "token": TOKEN,
        "batch_size": 20,
        "flush_interval_s": 0.05,
        "spool_dir": tmp_path / "spool",
        "retry_initial_s": 0.05,
        "retry_max_s": 0.3,
        "timeout_s": 3.0,
        **overrides,
    }
    return InfluxConfig.model_validate(values)


async def until(cond: Callable[[], bool], within_s: float = 20.0) -> None:
    """Poll a condition until it holds (bounded), instead of sleeping to synchronise."""
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def export(server: VictoriaMetrics, match: str = '{__name__!=""}') -> dict[tuple[str, frozenset[tuple[str, str]]], Any]:
    rows = await asyncio.to_thread(server.export, match)
    out = {}
    for row in rows:
        labels = dict(row["metric"])
        name = labels.pop("__name__")
        out[(name, frozenset(labels.items()))] = row
    return out


def series(rows: dict[tuple[str, frozenset[tuple[str, str]]], Any], name: str, **labels: str) -> list[tuple[int, float]]:
    """(timestamp ms, value) of every sample of the one series with this name and these labels, in time order."""
    found = [row for (n, lbl), row in rows.items() if n == name and set(labels.items()) <= set(lbl)]
    assert len(found) == 1, f"{name} {labels}: {len(found)} series"
    return sorted(zip(found[0]["timestamps"], found[0]["values"], strict=True))


@dataclass
class Running:
    sink: RunningSink
    task: asyncio.Task[None]
    group: asyncio.TaskGroup = field(repr=False)


async def settle(running: RunningSink, written: int) -> None:
    await until(lambda: running.written >= written and running.status()["backlog_disk"] == 0)


# -------------------------------------------------------------------------------------------- tests
def test_public_names_are_exported() -> None:
    public = {
        name
        for name, value in vars(influx_module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == influx_module.__name__
    }
    assert public <= set(influx_module.__all__), public - set(influx_module.__all__)


async def test_parts_alerts_and_signals_arrive_in_their_series(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    cfg = config(
        victoria.url,
        tmp_path,
        signals={"spindle.load": {"mode": "downsample", "interval_s": 1.0}, "execution": {"mode": "change"}},
    )
    running = _running(cfg, PROGRAMS, base_dir=tmp_path)
    alert = Alert(
        id="a1",
        machine="vmc-01",
        program="O1234",
        feature="hole1_pos",
        kind=AlertKind.FORECAST,
        severity=Severity.WARNING,
        state=AlertState.OPEN,
        part_number=12,
        message='hole1_pos drifting "+X"',
        time=BASE + timedelta(seconds=125),
        evidence={"parts_to_breach": 45.0, "breach_interval": [40, 52]},
    )
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(running.run())
        for i in range(1, 21):
            running.offer(part(i))
        running.offer(alert)
        for k in range(30):  # 10 Hz for 3 s: downsampled to one point per second
            running.offer(Observation("vmc-01", "spindle.load", BASE + timedelta(milliseconds=100 * k), 30.0 + k))
        for k, state in enumerate(["ACTIVE", "ACTIVE", "READY"]):
            running.offer(Observation("vmc-01", "execution", BASE + timedelta(seconds=k), state))
        running.offer(Observation("vmc-01", "tool.number", BASE, 12.0))  # not configured: not written
        await settle(running, 20 + 1 + 3 + 2)
        task.cancel()
    await running.aclose()
    assert running.status()["filtered"] == 27 + 1 + 1

    rows = await export(victoria)
    tags = {"machine": "vmc-01", "program": "O1234", "status": "complete"}
    numbers = series(rows, "part_part_number", **tags)
    assert numbers == [(ms(part(i).end), float(i)) for i in range(1, 21)], "one point per part at its end"
    dx = series(rows, "part_hole1_pos.dx", **tags)
    assert [round(v, 6) for _, v in dx] == [round(0.001 * i, 6) for i in range(1, 21)]
    tp = series(rows, "part_hole1_pos.tp", **tags)
    assert tp[9][1] == pytest.approx(2 * ((0.010) ** 2 + (0.005) ** 2) ** 0.5)
    assert series(rows, "part_hole1_dia.dev", **tags)[0][1] == pytest.approx(0.0005)
    assert series(rows, "part_tool_life", **tags)[0][1] == 98.5
    assert series(rows, "part_spindle_mean_load", **tags)[-1][1] == 60.0

    alert_tags = {"feature": "hole1_pos", "kind": "forecast", "severity": "warning", "state": "open"}
    assert series(rows, "alert_parts_to_breach", **alert_tags) == [(ms(alert.time), 45.0)]
    assert series(rows, "alert_part_number", **alert_tags) == [(ms(alert.time), 12.0)]
    load = series(rows, "signal_value", machine="vmc-01", signal="spindle.load")
    assert load == [(ms(BASE) + 1000 * s, 30.0 + 10 * s) for s in range(3)]
    execution = series(rows, "signal_available", machine="vmc-01", signal="execution")
    assert [t for t, _ in execution] == [ms(BASE), ms(BASE) + 2000], "only changes are written"
    assert not [k for k in rows if dict(k[1]).get("signal") == "tool.number"]


async def test_server_killed_mid_stream_every_point_arrives_exactly_once(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    running = _running(config(victoria.url, tmp_path), PROGRAMS, base_dir=tmp_path)
    total = 300
    produced = 0
    stopped_at = restarted_at = -1

    async def produce() -> None:
        nonlocal produced
        for i in range(total):
            running.offer(part(i))
            produced += 1
            await asyncio.sleep(0.003)  # a steady stream of parts, paced; not a synchronisation

    async def outage() -> None:
        nonlocal stopped_at, restarted_at
        await until(lambda: running.written >= 60)
        stopped_at = produced
        await asyncio.to_thread(victoria.stop)
        await until(lambda: running.state is SinkState.DOWN and produced >= stopped_at + 60)
        await asyncio.to_thread(victoria.start)  # same data directory, same port
        restarted_at = produced

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(running.run())
        producer = tg.create_task(produce())
        tg.create_task(outage())
        await producer
        await settle(running, total)
        task.cancel()
    await running.aclose()

    assert 60 <= stopped_at < restarted_at < total, (stopped_at, restarted_at)
    status = running.status()
    assert status["spooled"] > 0 and status["dropped"] == 0 and status["set_aside"] == 0, status
    rows = await export(victoria, '{__name__="part_part_number"}')
    samples = series(rows, "part_part_number", machine="vmc-01", program="O1234", status="complete")
    assert len(samples) == total, "no point lost and none written twice"
    assert samples == [(ms(part(i).end), float(i)) for i in range(total)]


async def test_daemon_restart_during_outage_loses_nothing(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    cfg = config(victoria.url, tmp_path)
    await asyncio.to_thread(victoria.stop)
    first = _running(cfg, PROGRAMS, base_dir=tmp_path)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(first.run())
        for i in range(100):
            first.offer(part(i))
        await until(lambda: first.state is SinkState.DOWN)
        for i in range(100, 130):
            first.offer(part(i))
        task.cancel()
    await first.aclose()  # the daemon stops while the server is still down
    assert first.status()["dropped"] == 0
    assert await asyncio.to_thread(lambda: Spool(tmp_path / "spool").pending_events) == 130

    await asyncio.to_thread(victoria.start)
    second = _running(cfg, PROGRAMS, base_dir=tmp_path)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(second.run())
        for i in range(130, 150):
            second.offer(part(i))
        await settle(second, 150)
        task.cancel()
    await second.aclose()

    rows = await export(victoria, '{__name__="part_part_number"}')
    samples = series(rows, "part_part_number", machine="vmc-01", program="O1234", status="complete")
    assert samples == [(ms(part(i).end), float(i)) for i in range(150)]


async def test_replayed_batch_overwrites_instead_of_duplicating(victoria_dedup: VictoriaMetrics) -> None:
    sink = InfluxSink(url=victoria_dedup.url, org="o", bucket="b", token=TOKEN, programs=PROGRAMS)
    batch = [part(i) for i in range(10)]
    try:
        await sink.write(batch)
        await sink.write(batch)  # what a crash between write and spool delete replays
    finally:
        await sink.aclose()
    rows = await export(victoria_dedup, '{__name__="part_part_number"}')
    samples = series(rows, "part_part_number", machine="vmc-01")
    assert samples == [(ms(p.end), float(p.part_number)) for p in batch]


# ------------------------------------------------------------- server answers victoria never gives
@dataclass
class ScriptedServer:
    """An HTTP server below the sink that answers writes from a script (status, headers, body)."""

    script: list[tuple[int, dict[str, str], str]]
    url: str = ""
    requests: list[tuple[float, dict[str, str], bytes]] = field(default_factory=list)

    stalls: int = 0
    """This many requests are held without an answer until ``release`` is set (a hung server)."""
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((time.monotonic(), dict(request.headers), await request.read()))
        if self.stalls > 0:
            self.stalls -= 1
            await self.release.wait()
        status, headers, body = self.script.pop(0) if self.script else (204, {}, "")
        return web.Response(status=status, headers=headers, text=body or None)


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer(script=[])
    app = web.Application()
    app.router.add_post("/api/v2/write", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}"
    try:
        yield server
    finally:
        server.release.set()
        await runner.cleanup()


async def test_refused_batch_is_set_aside_with_the_servers_message(
    scripted: ScriptedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps({"code": "invalid", "message": "partial write: field type conflict"})
    scripted.script = [(400, {"Content-Type": "application/json"}, body)]
    running = _running(config(scripted.url, tmp_path, batch_size=5), PROGRAMS, base_dir=tmp_path)
    with caplog.at_level(logging.INFO):
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(running.run())
            for i in range(10):
                running.offer(part(i))
            await until(lambda: running.written == 5 and running.set_aside == 5)
            task.cancel()
        await running.aclose()
    assert len(scripted.requests) == 2, "the refused batch is not retried"
    assert "field type conflict" in caplog.text
    rejected = await asyncio.to_thread(lambda: (tmp_path / "spool" / REJECTED_FILE).read_text().splitlines())
    assert [json.loads(line)["event"]["part_number"] for line in rejected] == [0, 1, 2, 3, 4]
    assert "HTTP 400" in running.status()["last_error"]


async def test_429_is_retried_after_the_servers_delay(scripted: ScriptedServer, tmp_path: Path) -> None:
    scripted.script = [(429, {"Retry-After": "1"}, ""), (503, {}, "")]
    running = _running(config(scripted.url, tmp_path, batch_size=5), PROGRAMS, base_dir=tmp_path)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(running.run())
        for i in range(5):
            running.offer(part(i))
        await until(lambda: running.written == 5)
        task.cancel()
    await running.aclose()
    times = [t for t, _, _ in scripted.requests]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.95, "Retry-After: 1 was honoured"
    assert scripted.requests[0][2] == scripted.requests[2][2], "the retry sends the same points"


async def test_hung_server_times_out_and_the_batch_is_retried(scripted: ScriptedServer, tmp_path: Path) -> None:
    scripted.stalls = 1
    running = _running(config(scripted.url, tmp_path, batch_size=5, timeout_s=0.3), PROGRAMS, base_dir=tmp_path)
    started = time.monotonic()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(running.run())
        for i in range(5):
            running.offer(part(i))
        await until(lambda: running.written == 5)
        task.cancel()
    await running.aclose()
    assert time.monotonic() - started < 5.0
    assert len(scripted.requests) == 2 and scripted.requests[0][2] == scripted.requests[1][2]
    assert running.retries == 1 and "failed" in str(running.status()["last_error"])


async def test_token_never_appears_in_errors_status_or_logs(
    scripted: ScriptedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A hostile or careless server that echoes the credentials it received.
    echo = json.dumps({"code": "unauthorized", "message": f"bad credentials: Token {TOKEN}"})
    scripted.script = [(401, {"Content-Type": "application/json", "X-Echo": TOKEN}, echo)]
    cfg = config(scripted.url, tmp_path, batch_size=1)
    running = _running(cfg, PROGRAMS, base_dir=tmp_path)
    with caplog.at_level(logging.DEBUG):
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(running.run())
            running.offer(part(1))
            await until(lambda: running.written == 1)
            task.cancel()
        await running.aclose()
        down = _running(config("http://127.0.0.1:9", tmp_path / "b"), PROGRAMS, base_dir=tmp_path)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(down.run())
            down.offer(part(2))
            await until(lambda: down.retries >= 2)
            task.cancel()
        await down.aclose()
    assert scripted.requests[0][1]["Authorization"] == f"Token {TOKEN}", "the token is sent to the server..."
    assert "bad credentials: Token ***" in str(running.status()["last_error"])
    for text in (caplog.text, json.dumps(running.status()), json.dumps(down.status()), repr(cfg), str(cfg)):
        assert TOKEN not in text, "...and nowhere else"
    assert down.status()["last_error"] and "127.0.0.1:9" in down.status()["last_error"]


def test_raw_signal_modes_are_validated() -> None:
    assert RawSignalConfig(mode="downsample", interval_s=0.5).interval_s == 0.5
    with pytest.raises(ValidationError, match="needs interval_s"):
        RawSignalConfig(mode="downsample")
    with pytest.raises(ValidationError, match="only applies"):
        RawSignalConfig(mode="change", interval_s=1.0)
    with pytest.raises(ValidationError):
        InfluxConfig.model_validate({"url": "http://x", "flush_rate": 1})


def test_encoder_writes_one_type_per_field_and_escapes() -> None:
    encoder = PointEncoder(PROGRAMS)
    line = encoder.encode(Observation("vmc 01", "program.name", BASE, 'O1234 "rev,B"'))
    assert line == f'signal,machine=vmc\\ 01,signal=program.name text="O1234 \\"rev,B\\"",available=true {time_ns(BASE)}'
    gone = encoder.encode(Observation("vmc-01", "spindle.load", BASE, None))
    assert gone == f"signal,machine=vmc-01,signal=spindle.load available=false {time_ns(BASE)}"
    p = PartRecord("k", "m", "O1234", 1, BASE, BASE, PartStatus.INCOMPLETE, measurements={"probe.hole1_x": 25})
    line = encoder.encode(p)
    assert line is not None and "probe.hole1_x=25.0" in line and "hole1_pos.dx=0.0" in line
    assert "hole1_pos.tp" not in line, "no true position without both axes"


def test_documented_site_example_loads_and_builds(tmp_path: Path) -> None:
    from monitor.config import load_site

    docs = Path(__file__).resolve().parents[2] / "docs" / "influx.md"
    example = docs.read_text().split("```yaml", 1)[1].split("```", 1)[0]
    (tmp_path / "programs").mkdir()
    site_file = tmp_path / "site.yaml"
    site_file.write_text("site: cell-3\n" + example)
    site = load_site(site_file, environ={"INFLUX_TOKEN": TOKEN})
    cfg = site.config.sinks.influx
    assert cfg is not None
    assert cfg.token.get_secret_value() == TOKEN and TOKEN not in repr(site.config)
    assert cfg.signals["spindle.speed"].mode == "off", "YAML's unquoted off is the mode, not False"
    running = _running(cfg, site.programs, base_dir=site_file.parent)
    assert running.spool_dir == tmp_path / "spool" / "influx"
    assert running.batch_size == 1000 and running.name == "influx"
