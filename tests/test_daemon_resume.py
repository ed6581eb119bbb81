"""A daemon stopped and restarted resumes its MTConnect source where it stopped: parts made while
it was down are recovered from the agent's buffer, none is stored twice. With either store backend."""

from __future__ import annotations

from pathlib import Path

import yaml

from monitor.config import Site, load_site
from monitor.model import PartStatus
from monitor.sim import SimCell, SimEvent, load_scenario
from monitor.sim.mtconnect_agent import SimAgentBinding
from monitor.sim.process import PROGRAMS_DIR
from monitor.store import open_store
from tests.daemons import running_daemon
from tests.stores import Backend


async def _run(site: Site, until_parts: int, feed: list[SimEvent], binding: SimAgentBinding) -> None:
    async with running_daemon(site, stop_timeout_s=20) as running:
        if feed:
            await running.until(lambda e: e.kind == "machine" and e.data["connection"] == "connected", timeout_s=60)
            for update in feed:  # the adapter is reading: what happens now is seen live
                binding.publish(update)
        await running.parts(until_parts, timeout_s=60)


async def test_restart_resumes_from_the_saved_sequence(tmp_path: Path, backend: Backend) -> None:
    cell = SimCell(load_scenario("tool_wear"), seed=3, parts=10)
    (machine,) = cell.machines
    events = list(cell.events())
    ends = [e.time for e in events if e.signal == "part.count" and e.value == 5.0]
    first = [e for e in events if e.time <= ends[0]]
    second = [e for e in events if e.time > ends[0]]
    async with SimAgentBinding([machine]) as binding:
        site_file = tmp_path / "site.yaml"
        site_file.write_text(
            yaml.safe_dump(
                {
                    "site": "resume",
                    "programs": str(PROGRAMS_DIR),
                    "dashboard": {"enabled": False},
                    **({"store": {"url": backend.location}} if backend.name == "postgres" else {}),
                    "machines": [
                        {
                            "id": machine.id,
                            "source": {"type": "mtconnect", "url": binding.url, "device": machine.id, "interval_ms": 20},
                            "signals": binding.signal_map(machine.id),
                            "tracking": {"grace_s": 5},
                        }
                    ],
                }
            )
        )
        site = load_site(site_file)
        await _run(site, 4, first, binding)  # the 5th part leaves the tracker at shutdown
        with open_store(site.store_location) as store:
            assert store.part_count() == 5
            assert store.load_position(machine.id, f"mtconnect {binding.url}") is not None
        for event in second:  # made while the monitor was down
            binding.publish(event)
        await _run(site, 5, [], binding)
    with open_store(site.store_location) as store:
        parts = store.parts()
    assert [p.part_number for p in parts] == list(range(1, 11))
    assert all(p.status is PartStatus.COMPLETE for p in parts), [(p.part_number, p.notes) for p in parts]
    assert len({p.key for p in parts}) == 10
