"""The parser on hand-written edge cases, hostile input, and arbitrary bytes (property test)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.mtconnect.documents import (
    AssetsDocument,
    CuttingToolAsset,
    DevicesDocument,
    ErrorDocument,
    StreamsDocument,
)
from adapters.mtconnect.parser import parse_devices, parse_document, parse_error, parse_streams
from monitor.errors import BadDocument

STREAMS = b"""<?xml version="1.0"?>
<MTConnectStreams xmlns="urn:mtconnect.org:MTConnectStreams:2.3" xmlns:x="urn:vendor:x">
  <Header instanceId="5" nextSequence="20" firstSequence="1" lastSequence="19" bufferSize="64"
      creationTime="2024-01-01T00:00:00Z" sender="a" version="2.3"/>
  <Streams><DeviceStream name="m1" uuid="u1"><ComponentStream componentId="c1" component="Path">
    <Samples>
      <Load dataItemId="load" sequence="3" timestamp="2024-01-01T00:00:01.1234567Z">42.5</Load>
      <Load dataItemId="load" sequence="4" timestamp="2024-01-01T00:00:02Z">UNAVAILABLE</Load>
      <x:Vibration dataItemId="vib" sequence="5" timestamp="2024-01-01T00:00:02Z">3</x:Vibration>
      <x:Junk>ignored</x:Junk>
    </Samples>
    <Events>
      <VariableDataSet dataItemId="vars" sequence="6" timestamp="2024-01-01T00:00:03Z" count="2">
        <Entry key="500">25.001</Entry><Entry key="501" removed="true"/>
      </VariableDataSet>
      <VariableDataSet dataItemId="vars" sequence="7" timestamp="2024-01-01T00:00:03Z"> UNAVAILABLE </VariableDataSet>
      <WorkOffsetTable dataItemId="wo" sequence="8" timestamp="2024-01-01T00:00:03Z">
        <Entry key="G54"><Cell key="X">1.5</Cell><Cell key="Y">2</Cell></Entry>
      </WorkOffsetTable>
      <AssetChanged dataItemId="ac" assetType="CuttingTool" sequence="9"
        timestamp="2024-01-01T00:00:04Z">T1</AssetChanged>
      <Program dataItemId="prog" sequence="10" timestamp="2024-01-01T00:00:04Z"></Program>
    </Events>
    <Condition>
      <Fault dataItemId="sys" sequence="11" timestamp="2024-01-01T00:00:05Z" type="SYSTEM" nativeCode="A1">boom</Fault>
      <Warning dataItemId="sys" sequence="12" timestamp="2024-01-01T00:00:05Z" type="SYSTEM"
        nativeCode="B2">hot</Warning>
      <Unavailable dataItemId="sys" sequence="13" timestamp="2024-01-01T00:00:05Z" type="SYSTEM"/>
    </Condition>
  </ComponentStream></DeviceStream></Streams>
</MTConnectStreams>"""


def test_streams_values_and_header() -> None:
    doc = parse_streams(STREAMS)
    assert doc.version == "2.3"
    h = doc.header
    assert (h.instance_id, h.next_sequence, h.first_sequence, h.last_sequence, h.buffer_size) == (5, 20, 1, 19, 64)
    by_seq = {o.sequence: o for o in doc.observations}
    assert [o.sequence for o in doc.observations] == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    assert by_seq[3].value == "42.5" and by_seq[3].category == "SAMPLE"
    assert by_seq[3].time.microsecond == 123456 and by_seq[3].time.tzinfo is not None
    assert by_seq[4].value is None  # UNAVAILABLE is missing, never 0
    assert by_seq[5].element == "Vibration"  # extension observation kept with its sequence
    assert by_seq[6].value == {"500": "25.001", "501": None}
    assert by_seq[7].value is None
    assert by_seq[8].value == {"G54": {"X": "1.5", "Y": "2"}}
    assert by_seq[9].asset_type == "CuttingTool" and by_seq[9].value == "T1"
    assert by_seq[10].value == ""
    assert (by_seq[11].level, by_seq[11].native_code, by_seq[11].value) == ("Fault", "A1", "boom")
    assert by_seq[12].level == "Warning" and by_seq[13].level is None and by_seq[13].value is None


def test_only_filter_keeps_selected_items() -> None:
    doc = parse_streams(STREAMS, only=frozenset({"load"}))
    assert [o.sequence for o in doc.observations] == [3, 4]
    assert doc.header.next_sequence == 20


def test_no_namespace_and_1_0_namespace() -> None:
    plain = parse_document(
        b"<MTConnectDevices><Header instanceId='1'/><Devices><Device id='d' name='D'>"
        b"<DataItems><DataItem id='a' category='EVENT' type='AVAILABILITY'/></DataItems>"
        b"<Components><Controller id='c'><Components><Path id='p' name='P1'><DataItems>"
        b"<DataItem id='x' name='Sload' category='SAMPLE' type='LOAD' subType='ACTUAL' "
        b"units='PERCENT'/>"
        b"</DataItems></Path></Components></Controller></Components></Device></Devices></MTConnectDevices>"
    )
    assert isinstance(plain, DevicesDocument) and plain.version == ""
    items = {d.id: d for d in plain.devices[0].data_items}
    assert items["x"].path == ("Device[D]", "Controller", "Path[P1]")
    x = items["x"]
    assert (x.type, x.sub_type, x.units, x.name) == ("LOAD", "ACTUAL", "PERCENT", "Sload")
    old = parse_devices(b"<MTConnectDevices xmlns='urn:mtconnect.com:MTConnectDevices:1.0'><Devices/></MTConnectDevices>")
    assert old.version == "1.0" and old.devices == ()


def test_three_error_shapes_and_unknown_codes() -> None:
    wrapped = parse_error(
        b"<MTConnectError xmlns='urn:mtconnect.org:MTConnectError:1.7'><Header instanceId='3'/>"
        b"<Errors><Error errorCode='OUT_OF_RANGE'>too old</Error><Error errorCode='WEIRD'>x</Error>"
        b"</Errors></MTConnectError>"
    )
    assert wrapped.codes == ("OUT_OF_RANGE", "WEIRD") and wrapped.errors[0].known and not wrapped.errors[1].known
    legacy = parse_error(b"<MTConnectError><Header/><Error errorCode='NO_DEVICE'>no</Error></MTConnectError>")
    assert legacy.codes == ("NO_DEVICE",) and legacy.errors[0].message == "no"
    typed = parse_error(
        b"<MTConnectError xmlns='urn:mtconnect.org:MTConnectError:2.6'><Header/><Errors>"
        b"<OutOfRange errorCode='OUT_OF_RANGE'><ErrorMessage>from too small</ErrorMessage></OutOfRange>"
        b"<InvalidRequest><ErrorMessage>bad</ErrorMessage></InvalidRequest></Errors></MTConnectError>"
    )
    assert typed.codes == ("OUT_OF_RANGE", "INVALID_REQUEST") and typed.errors[0].message == "from too small"
    coded = parse_error(b"<MTConnectError><Errors><Error><ErrorCode>TOO_MANY</ErrorCode></Error></Errors></MTConnectError>")
    assert coded.codes == ("TOO_MANY",)


def test_cutting_tool_life() -> None:
    doc = parse_document(
        b"<MTConnectAssets><Header assetCount='1'/><Assets>"
        b"<CuttingTool assetId='T1.1' toolId='T1' serialNumber='1'><CuttingToolLifeCycle>"
        b"<CutterStatus><Status>USED</Status><Status>AVAILABLE</Status></CutterStatus>"
        b"<ToolLife type='MINUTES' countDirection='UP' warning='50' limit='60'>12.5</ToolLife>"
        b"<ProgramToolNumber>12</ProgramToolNumber>"
        b"<CuttingItems count='1'><CuttingItem indices='1'>"
        b"<ItemLife type='PART_COUNT' countDirection='DOWN' limit='100'>7</ItemLife></CuttingItem>"
        b"</CuttingItems></CuttingToolLifeCycle></CuttingTool></Assets></MTConnectAssets>"
    )
    assert isinstance(doc, AssetsDocument)
    tool = doc.assets[0]
    assert isinstance(tool, CuttingToolAsset)
    assert tool.status == ("USED", "AVAILABLE") and tool.program_tool_number == "12"
    life = tool.tool_life[0]
    assert (life.type, life.count_direction, life.value) == ("MINUTES", "UP", 12.5)
    assert (life.warning, life.limit) == (50.0, 60.0)
    assert tool.item_life[0].item == "1" and tool.item_life[0].value == 7.0


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<MTConnectStreams><Header/><Streams>&lol2;</Streams></MTConnectStreams>"""

XXE = b"""<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]><MTConnectError>&x;</MTConnectError>"""


@pytest.mark.parametrize(
    "data",
    [
        BOMB,
        XXE,
        BOMB.decode().encode("utf-16"),
        b"",
        b"   ",
        b"<MTConnectStreams><Header/><Streams>",  # truncated
        STREAMS[: len(STREAMS) // 2],
        b"HTTP/1.1 500 garbage",
        b"<html><body>proxy error</body></html>",
        b"<MTConnectStreams><Streams><DeviceStream><ComponentStream><Samples><Load sequence='x' "
        b"dataItemId='a' timestamp='t'>1</Load></Samples></ComponentStream></DeviceStream></Streams>"
        b"</MTConnectStreams>",
        b"<MTConnectError/>",
    ],
)
def test_hostile_or_broken_input_is_bad_document(data: bytes) -> None:
    with pytest.raises(BadDocument):
        parse_document(data)


def test_size_cap() -> None:
    with pytest.raises(BadDocument, match="limit"):
        parse_document(STREAMS, max_bytes=100)


def test_error_where_streams_expected_names_the_code() -> None:
    with pytest.raises(BadDocument, match="OUT_OF_RANGE"):
        parse_streams(b"<MTConnectError><Errors><Error errorCode='OUT_OF_RANGE'>x</Error></Errors></MTConnectError>")


def test_kinds() -> None:
    assert isinstance(parse_document(STREAMS), StreamsDocument)
    assert isinstance(parse_document(b"<MTConnectError><Error errorCode='X'/></MTConnectError>"), ErrorDocument)


_fragments = st.sampled_from(
    [
        b"<",
        b">",
        b"/",
        b"MTConnectStreams",
        b"MTConnectDevices",
        b"MTConnectError",
        b"MTConnectAssets",
        b"Header",
        b"Streams",
        b"DeviceStream",
        b"ComponentStream",
        b"Samples",
        b"Condition",
        b"Load",
        b"Entry",
        b"DataItem",
        b"Device",
        b"Devices",
        b"Components",
        b"DataItems",
        b"Errors",
        b"Error",
        b"CuttingTool",
        b" sequence='",
        b" timestamp='",
        b" dataItemId='",
        b" key='",
        b" errorCode='",
        b" instanceId='",
        b" limit='",
        b"'",
        b"1",
        b"-3",
        b"x",
        b"UNAVAILABLE",
        b"&amp;",
        b"&",
        b"<!DOCTYPE",
        b"<?xml version='1.0'?>",
        b"\xff\xfe",
        b"\x00",
        b" xmlns='urn:mtconnect.org:MTConnectStreams:2.0'",
        b"<![CDATA[",
        b"]]>",
        b"<!--",
        b"-->",
        b"ToolLife",
        b"CuttingToolLifeCycle",
        b"assetId='a'",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.lists(_fragments, max_size=40).map(b"".join)))
def test_any_bytes_raise_only_bad_document(data: bytes) -> None:
    with contextlib.suppress(BadDocument):
        parse_document(data)


def test_measurement_items_of_2_2_and_later() -> None:
    doc = parse_streams(
        b"<MTConnectStreams xmlns='urn:mtconnect.org:MTConnectStreams:2.5'><Header instanceId='1' nextSequence='5'/>"
        b"<Streams><DeviceStream name='m'><ComponentStream componentId='p'><Events>"
        b"<FeatureMeasurement dataItemId='fm' sequence='1' timestamp='2024-01-01T00:00:00Z'>HOLE_A</FeatureMeasurement>"
        b"<MeasurementValue dataItemId='mv' sequence='2' timestamp='2024-01-01T00:00:00Z'>25.0031</MeasurementValue>"
        b"<CharacteristicStatus dataItemId='cs' sequence='3' timestamp='2024-01-01T00:00:00Z'>PASS</CharacteristicStatus>"
        b"<Uncertainty dataItemId='un' sequence='4' timestamp='2024-01-01T00:00:00Z'>0.0012</Uncertainty>"
        b"</Events></ComponentStream></DeviceStream></Streams></MTConnectStreams>"
    )
    assert doc.version == "2.5"
    assert [(o.element, o.value) for o in doc.observations] == [
        ("FeatureMeasurement", "HOLE_A"),
        ("MeasurementValue", "25.0031"),
        ("CharacteristicStatus", "PASS"),
        ("Uncertainty", "0.0012"),
    ]


_NAMES = st.sampled_from(
    [
        "MTConnectStreams",
        "Header",
        "Streams",
        "DeviceStream",
        "ComponentStream",
        "Samples",
        "Events",
        "Condition",
        "Load",
        "Fault",
        "Normal",
        "Unavailable",
        "VariableDataSet",
        "WorkOffsetTable",
        "Entry",
        "Cell",
        "MTConnectDevices",
        "Devices",
        "Device",
        "Agent",
        "Components",
        "DataItems",
        "DataItem",
        "MTConnectError",
        "Errors",
        "Error",
        "ErrorCode",
        "ErrorMessage",
        "OutOfRange",
        "MTConnectAssets",
        "Assets",
        "CuttingTool",
        "CuttingToolLifeCycle",
        "ToolLife",
        "CuttingItems",
        "CuttingItem",
        "ItemLife",
        "CutterStatus",
        "Status",
    ]
)
_ATTRS = st.dictionaries(
    st.sampled_from(
        [
            "sequence",
            "timestamp",
            "dataItemId",
            "id",
            "key",
            "removed",
            "errorCode",
            "instanceId",
            "nextSequence",
            "assetId",
            "limit",
            "category",
            "type",
            "name",
            "componentId",
            "nativeCode",
        ]
    ),
    st.sampled_from(["1", "-1", "x", "", "2024-01-01T00:00:00Z", "true", "9" * 30, "UNAVAILABLE", "1e309", "nan"]),
    max_size=5,
)
_TEXT = st.sampled_from(["", "1", "UNAVAILABLE", " x ", "2.5"])
_Node = tuple[str, dict[str, str], str, list[Any]]
_TREE: st.SearchStrategy[_Node] = st.recursive(
    st.tuples(_NAMES, _ATTRS, _TEXT, st.just([])),
    lambda kids: st.tuples(_NAMES, _ATTRS, _TEXT, st.lists(kids, max_size=4)),
    max_leaves=40,
)


def _build(node: _Node) -> Any:
    from lxml import etree

    tag, attrs, text, kids = node
    el = etree.Element(tag, attrs)
    el.text = text
    for kid in kids:
        el.append(_build(kid))
    return el


@settings(max_examples=300, deadline=None)
@given(_TREE)
def test_well_formed_but_wrong_documents_raise_only_bad_document(tree: _Node) -> None:
    from lxml import etree

    data = etree.tostring(_build(tree))
    try:
        doc = parse_document(data)
    except BadDocument:
        return
    if isinstance(doc, StreamsDocument):
        for o in doc.observations:
            with contextlib.suppress(BadDocument):
                assert o.time.tzinfo is not None


def test_a_failed_parse_leaves_nothing_for_the_next() -> None:
    """Each thread keeps one streams parser: what a failed document gathered never reaches the next,
    whatever kind of document comes between, and threads do not share a parser."""
    from concurrent.futures import ThreadPoolExecutor

    first = parse_streams(STREAMS)
    broken = STREAMS.replace(b'sequence="11"', b"")  # fails at its 9th observation
    with pytest.raises(BadDocument, match="without dataItemId, timestamp or sequence"):
        parse_streams(broken)
    with pytest.raises(BadDocument):
        parse_streams(STREAMS[: len(STREAMS) // 2])  # cut short: malformed
    assert isinstance(
        parse_document(b"<MTConnectError><Header/><Error errorCode='NO_DEVICE'>no</Error></MTConnectError>"), ErrorDocument
    )
    assert parse_streams(STREAMS) == first
    loads = [o for o in first.observations if o.data_item_id == "load"]
    assert parse_streams(STREAMS, only=frozenset({"load"})).observations == loads
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: parse_streams(STREAMS), range(40))) == [first] * 40
