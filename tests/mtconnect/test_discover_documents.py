"""`monitor discover` against agents that answer oddly: an MTConnectError for /current (two errors,
all named, no traceback), a document with an undeclared namespace prefix (counted and said), and
CONDITION or newton LOAD items that are not a spindle load."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

from adapters.mtconnect.agent import MtConnectAgent
from adapters.mtconnect.config import MtConnectSource
from adapters.mtconnect.devicemodel import ComponentSpec, DeviceSpec, ItemSpec
from adapters.mtconnect.discover import discover

ERROR_DOC = b"""<?xml version="1.0" encoding="UTF-8"?>
<MTConnectError xmlns="urn:mtconnect.org:MTConnectError:2.0">
  <Header creationTime="2026-03-02T06:00:00Z" sender="agent" instanceId="1" version="2.0.0" bufferSize="131072"/>
  <Errors>
    <Error errorCode="OUT_OF_RANGE">'from' must be greater than 1</Error>
    <Error errorCode="INVALID_REQUEST">the device is not ready</Error>
  </Errors>
</MTConnectError>"""

UNDECLARED = b"""<?xml version="1.0" encoding="UTF-8"?>
<MTConnectStreams xmlns="urn:mtconnect.org:MTConnectStreams:2.0">
  <Header creationTime="2026-03-02T06:00:00Z" sender="agent" instanceId="1" version="2.0.0" bufferSize="16"
          nextSequence="3" firstSequence="1" lastSequence="2"/>
  <Streams><DeviceStream name="mill" uuid="mill-uuid"><ComponentStream component="Rotary" componentId="c" name="C">
    <Samples><Load dataItemId="c_load" timestamp="2026-03-02T06:00:00Z" sequence="1">42.5</Load></Samples>
    <Events><x:SpindleTemp dataItemId="c_temp" timestamp="2026-03-02T06:00:00Z" sequence="2">31</x:SpindleTemp></Events>
  </ComponentStream></DeviceStream></Streams>
</MTConnectStreams>"""


def mill() -> DeviceSpec:
    spindle = ComponentSpec(
        "Rotary",
        "c",
        name="C",
        items=(
            ItemSpec("c_load", "SAMPLE", "LOAD", units="PERCENT"),
            ItemSpec("c_force", "SAMPLE", "LOAD", units="NEWTON", name="axial"),
            ItemSpec("c_load_cond", "CONDITION", "LOAD"),
        ),
    )
    return DeviceSpec("mill", "mill-uuid", "mill", components=(ComponentSpec("Axes", "axes", components=(spindle,)),))


@asynccontextmanager
async def odd_agent(current: bytes) -> AsyncIterator[str]:
    """Our agent's /probe for the mill, and ``current`` as the answer to /current."""
    async with MtConnectAgent([mill()]) as agent, aiohttp.ClientSession() as session:
        async with session.get(agent.url.rstrip("/") + "/probe") as resp:
            probe = await resp.read()

        async def answer(request: web.Request) -> web.Response:
            body = probe if request.path.endswith("/probe") else current
            return web.Response(body=body, content_type="application/xml")

        app = web.Application()
        app.router.add_get("/{tail:.*}", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()


async def cli(url: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "discover", url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_error_document_for_current_names_every_error_and_still_lists_the_items() -> None:
    async with odd_agent(ERROR_DOC) as url:
        code, out, err = await cli(url)
    assert code == 0, err
    assert "Traceback" not in err
    text = " ".join(err.split())
    assert "OUT_OF_RANGE" in text and "INVALID_REQUEST: the device is not ready" in text
    assert "c_load" in out  # the items come from /probe: still listed, without values


async def test_undeclared_prefix_is_said_and_loads_that_are_no_spindle_load_are_not_suggested() -> None:
    async with odd_agent(UNDECLARED) as url:
        warnings: list[str] = []
        found = {s.address: s for s in await discover(MtConnectSource.for_url(url), warnings=warnings)}
        code, _, err = await cli(url)
    assert found["c_load"].suggested == "spindle.load" and found["c_load"].value == "42.5"
    assert found["c_force"].suggested is None  # a LOAD in newtons is a force
    assert found["c_load_cond"].suggested is None  # a CONDITION is a state
    assert any("Namespace prefix x" in w for w in warnings)
    assert code == 0 and "Namespace prefix x on SpindleTemp is not defined" in " ".join(err.split())
