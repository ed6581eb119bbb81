"""Our agent over real HTTP: every document kind validates against the 2.7 XSDs; errors; buffer; streaming."""

from __future__ import annotations

import aiohttp
import pytest
from lxml import etree

from adapters.mtconnect.agent import BOUNDARY, MtConnectAgent
from adapters.mtconnect.documents import CuttingToolAsset, ErrorDocument, Life, StreamsDocument
from adapters.mtconnect.parser import parse_assets, parse_devices, parse_document, parse_streams
from adapters.mtconnect.render import VERSION
from tests.mtconnect._devices import vmc
from tests.mtconnect._shared import shared


@pytest.fixture(scope="module")
def schemas() -> dict[str, etree.XMLSchema]:
    folder = shared("schemas")
    return {
        k: etree.XMLSchema(etree.parse(str(folder / f"MTConnect{k}_{VERSION}_1.0.xsd")))
        for k in ("Devices", "Streams", "Assets", "Error")
    }


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with session.get(url) as r:
        return r.status, await r.read()


def _feed(agent: MtConnectAgent) -> None:
    agent.publish("vmc", "vmc_load", 12.5)
    agent.publish("vmc", "Srpm", 8000.0)
    agent.publish("vmc", "vmc_pc", 3.0)
    agent.publish("vmc", "vmc_exec", "ACTIVE")
    agent.publish("vmc", "vmc_prog", "O1234")
    agent.publish("vmc", "vmc_system", "hot", level="Warning", native_code="W1")
    agent.publish("vmc", "vmc_system", "bad", level="Fault", native_code="F1")
    agent.publish("vmc", "hole1_x", 25.001)
    agent.add_cutting_tool("vmc", CuttingToolAsset("T1.1", "T1", tool_life=(Life("MINUTES", "UP", 3.0, 50.0, 60.0),)))


@pytest.mark.interop
async def test_every_document_kind_validates(schemas: dict[str, etree.XMLSchema]) -> None:
    async with MtConnectAgent([vmc()], buffer_size=64) as agent, aiohttp.ClientSession() as s:
        _feed(agent)
        cases = [
            ("/probe", "Devices", 200),
            ("/vmc/probe", "Devices", 200),
            ("/current", "Streams", 200),
            ("/current?at=5", "Streams", 200),
            ("/sample?from=1&count=5", "Streams", 200),
            ("/vmc/sample", "Streams", 200),
            ("/assets", "Assets", 200),
            ("/asset/T1.1", "Assets", 200),
            ("/nodev/probe", "Error", 404),
            ("/sample?from=0", "Error", 400),
            ("/asset/zz", "Error", 404),
            ("/sample?count=x", "Error", 400),
            ("/sample?count=0", "Error", 400),
            ("/current?at=999", "Error", 400),
            ("/x/y/z", "Error", 404),
        ]
        for path, kind, status in cases:
            code, body = await _get(s, agent.url + path)
            assert code == status, path
            schema = schemas[kind]
            assert schema.validate(etree.fromstring(body)), (path, schema.error_log.filter_from_errors()[:2])


async def test_documents_round_trip_through_our_parser() -> None:
    async with MtConnectAgent([vmc()], buffer_size=64) as agent, aiohttp.ClientSession() as s:
        _feed(agent)
        probe = parse_devices((await _get(s, agent.url + "/probe"))[1])
        assert probe.version == VERSION and probe.devices[0].name == "vmc"
        items = {i.id: i for i in probe.devices[0].data_items}
        assert items["vmc_load"].path == ("Device[vmc]", "Axes", "Rotary[C]")
        cur = parse_streams((await _get(s, agent.url + "/current"))[1])
        vals = {o.data_item_id: o.value for o in cur.observations if o.category != "CONDITION"}
        assert vals["vmc_load"] == "12.5" and vals["vmc_pc"] == "3" and vals["vmc_tool"] is None
        assert vals["vmc_asset_chg"] == "T1.1"
        conds = sorted(o.native_code or "" for o in cur.observations if o.data_item_id == "vmc_system")
        assert conds == ["F1", "W1"]  # two active at once
        agent.publish("vmc", "vmc_system", "", level="Normal")
        cur2 = parse_streams((await _get(s, agent.url + "/current"))[1])
        assert [o.level for o in cur2.observations if o.data_item_id == "vmc_system"] == ["Normal"]
        assert cur.header.next_sequence is not None
        at = parse_streams((await _get(s, agent.url + f"/current?at={cur.header.next_sequence - 1}"))[1])
        assert sorted(o.native_code or "" for o in at.observations if o.data_item_id == "vmc_system") == ["F1", "W1"]
        assets = parse_assets((await _get(s, agent.url + "/assets"))[1])
        tool = assets.assets[0]
        assert isinstance(tool, CuttingToolAsset) and tool.tool_life[0].limit == 60.0
        assert agent.remove_asset("T1.1")
        assert parse_assets((await _get(s, agent.url + "/assets"))[1]).assets == ()
        assert len(parse_assets((await _get(s, agent.url + "/assets?removed=true"))[1]).assets) == 1


async def test_ring_buffer_and_out_of_range() -> None:
    async with MtConnectAgent([vmc()], buffer_size=20) as agent, aiohttp.ClientSession() as s:
        for i in range(50):
            agent.publish("vmc", "vmc_load", float(i))
        doc = parse_document((await _get(s, agent.url + "/sample?from=1"))[1])
        assert isinstance(doc, ErrorDocument) and doc.codes == ("OUT_OF_RANGE",)
        cur = parse_streams((await _get(s, agent.url + "/current"))[1])
        first, nxt = cur.header.first_sequence, cur.header.next_sequence
        assert first is not None and nxt is not None and nxt - first == 20
        page = parse_streams((await _get(s, agent.url + f"/sample?from={first}&count=5"))[1])
        assert [o.sequence for o in page.observations] == list(range(first, first + 5))
        assert page.header.next_sequence == first + 5
        # the state before the ring still counts for /current?at
        at = parse_streams((await _get(s, agent.url + f"/current?at={first}"))[1])
        assert {o.data_item_id for o in at.observations} >= {"vmc_load", "vmc_prog", "vmc_system"}


async def test_restart_changes_instance_and_resets_sequence() -> None:
    async with MtConnectAgent([vmc()]) as agent, aiohttp.ClientSession() as s:
        _feed(agent)
        before = parse_streams((await _get(s, agent.url + "/current"))[1]).header
        agent.restart()
        after = parse_streams((await _get(s, agent.url + "/current"))[1]).header
        assert after.instance_id != before.instance_id
        assert after.next_sequence is not None and before.next_sequence is not None
        assert after.next_sequence < before.next_sequence


async def test_streaming_parts_and_heartbeat() -> None:
    async with MtConnectAgent([vmc()]) as agent, aiohttp.ClientSession() as s:
        start = parse_streams((await _get(s, agent.url + "/current"))[1]).header.next_sequence
        async with s.get(agent.url + f"/sample?from={start}&interval=0&heartbeat=100&count=100") as r:
            assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            assert BOUNDARY in r.headers["Content-Type"]
            # nothing published yet: a heartbeat part (header only) must arrive within ~100 ms
            bodies: list[StreamsDocument] = []
            buf = b""
            published = False
            while len(bodies) < 3:
                buf += await r.content.readany()
                while True:
                    head_end = buf.find(b"\r\n\r\n")
                    if head_end < 0:
                        break
                    head = buf[:head_end].decode()
                    length = int(head.lower().split("content-length:")[1].split()[0])
                    if len(buf) < head_end + 4 + length:
                        break
                    bodies.append(parse_streams(buf[head_end + 4 : head_end + 4 + length]))
                    buf = buf[head_end + 4 + length + 2 :]
                    if not published:
                        agent.publish("vmc", "vmc_load", 1.0)
                        agent.publish("vmc", "vmc_load", 2.0)
                        published = True
            assert bodies[0].observations == []  # heartbeat
            values = [o.value for b in bodies[1:] for o in b.observations]
            assert values[:2] == ["1", "2"]
