"""A small cell for the dashboard tests: a real Daemon fed by replay sources.

- ``vmc-01`` replays the simulated ``tool_wear`` scenario (100 parts of O1001, drift alerts);
- ``xss-02`` runs a program whose name is an HTML/script payload (a controller may report anything),
  then loses its connection (signal lost);
- ``live-03`` reads a FIFO: it sends nothing until the test calls :meth:`Cell.feed_live`, so an
  alert can be raised *after* a page is open, without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import os
import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from monitor.codec import observation_to_dict
from monitor.config import Site, load_site
from monitor.daemon import Daemon
from monitor.model import CONNECTION_SIGNAL, Observation
from monitor.sim import SimCell, load_scenario
from tests.daemons import running_daemon
from tests.streams import PROGRAM_YAML, batch

__all__ = ["ENGINEER_TOKEN", "LIVE", "OPERATOR_TOKEN", "SIM", "TOKEN", "XSS", "XSS_PROGRAM", "Cell", "live_stream", "start_cell"]

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tok-3f9a1c"
"""The site's shared dashboard token (the user "dashboard", an operator)."""
OPERATOR_TOKEN = "olga-7c1e9b2d4a6f"
ENGINEER_TOKEN = "eric-5d8f3a6c1b9e"
_TOKENS_ENV = {"MONITOR_TOKEN_OLGA": OPERATOR_TOKEN, "MONITOR_TOKEN_ERIC": ENGINEER_TOKEN}
SIM, XSS, LIVE = "vmc-01", "xss-02", "live-03"
XSS_PROGRAM = 'X<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
SIM_PARTS = 100
XSS_PARTS = 6


def live_stream(parts: int, oot_at: int) -> list[Observation]:
    """``parts`` cycles of O1001 (all its probe signals, so parts are complete), part ``oot_at`` out of
    tolerance on hole1_dia."""
    out: list[Observation] = []
    for o in batch(parts, oot_at=oot_at):
        out.append(o)
        if o.signal == "probe.hole1_y":
            for i, (signal, value) in enumerate(
                (("probe.hole2_x", 75.001), ("probe.hole2_y", 40.0), ("probe.hole2_dia", 10.008)), start=1
            ):
                out.append(Observation(o.machine, signal, o.time + timedelta(seconds=0.05 * i), value))
    return out


def _write(path: Path, stream: list[Observation]) -> Path:
    path.write_text("".join(json.dumps(observation_to_dict(o)) + "\n" for o in stream), encoding="utf-8")
    return path


def _site_yaml(tmp: Path, token: str | None) -> Path:
    programs = tmp / "programs"
    programs.mkdir()
    shutil.copy(ROOT / "monitor" / "sim" / "programs" / "O1001.yaml", programs / "O1001.yaml")
    (programs / "xss.yaml").write_text(
        PROGRAM_YAML.replace("program: O1001", f"program: {json.dumps(XSS_PROGRAM)}"), encoding="utf-8"
    )
    sim = [e.observation() for e in SimCell(load_scenario("tool_wear"), seed=1).events(include_spindle_samples=False)]
    _write(tmp / "sim.jsonl", sim)
    xss = [dataclasses.replace(o, value=XSS_PROGRAM) if o.signal == "program.name" else o for o in batch(XSS_PARTS)]
    xss.append(Observation(XSS, CONNECTION_SIGNAL, xss[-1].time + timedelta(seconds=30), "lost"))  # then it went away
    _write(tmp / "xss.jsonl", xss)
    os.mkfifo(tmp / "live.fifo")
    token_line = f", token: {json.dumps(token)}" if token else ""
    users = (
        'users:\n  olga: {role: operator, token: "${MONITOR_TOKEN_OLGA}"}\n'
        '  eric: {role: engineer, token: "${MONITOR_TOKEN_ERIC}"}\n'
        if token
        else ""
    )
    site = tmp / "site.yaml"
    site.write_text(
        f"""\
site: test-cell
store: {{path: monitor.db}}
programs: programs
dashboard: {{port: 0{token_line}}}
{users}machines:
  - id: {SIM}
    probe_tool: "99"
    source: {{type: replay, path: "{tmp / "sim.jsonl"}"}}
    tracking: {{grace_s: 1.0}}
  - id: {XSS}
    source: {{type: replay, path: "{tmp / "xss.jsonl"}"}}
    tracking: {{grace_s: 1.0}}
  - id: {LIVE}
    source: {{type: replay, path: "{tmp / "live.fifo"}"}}
    tracking: {{grace_s: 1.0}}
""",
        encoding="utf-8",
    )
    return site


@dataclasses.dataclass
class Cell:
    daemon: Daemon
    url: str
    fifo: Path
    _fed: bool = False

    async def feed_live(self, stream: list[Observation]) -> None:
        """Send ``stream`` through the FIFO of ``live-03`` (once; the replay reads it to its end)."""
        assert not self._fed, "the live machine's FIFO can be fed once"
        self._fed = True
        text = "".join(json.dumps(observation_to_dict(o)) + "\n" for o in stream)
        await asyncio.to_thread(self.fifo.write_text, text, encoding="utf-8")

    def release(self) -> None:
        """Give a still-waiting FIFO reader its end of file, so no thread is left blocked."""
        if self._fed:
            return
        self._fed = True
        try:
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:  # ENXIO: nobody is reading
            if exc.errno != errno.ENXIO:
                raise
            return
        os.close(fd)


@contextlib.asynccontextmanager
async def start_cell(tmp: Path, *, token: str | None = TOKEN) -> AsyncIterator[Cell]:
    """Run the cell's daemon until the two file replays are stored; yields the :class:`Cell`."""
    saved = {k: os.environ.get(k) for k in _TOKENS_ENV}
    os.environ.update(_TOKENS_ENV)  # the daemon reads them again at a reload
    try:
        site = load_site(_site_yaml(tmp, token))
        async with _cell(site, tmp) as cell:
            yield cell
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.asynccontextmanager
async def _cell(site: Site, tmp: Path) -> AsyncIterator[Cell]:
    async with running_daemon(site, queue=5000) as running:
        daemon = running.daemon
        assert daemon.dashboard_url is not None
        cell = Cell(daemon, daemon.dashboard_url.rstrip("/"), tmp / "live.fifo")
        try:
            await running.parts(0, machines={SIM: SIM_PARTS, XSS: XSS_PARTS})
            running.events.close()
            yield cell
        finally:
            cell.release()  # before the daemon stops: a FIFO reader still waiting gets its end of file
