"""Every document in ../shared/mtconnect parses, with the counts its README implies."""

from __future__ import annotations

import pytest

from adapters.mtconnect.documents import CuttingToolAsset, GenericAsset
from adapters.mtconnect.parser import parse_assets, parse_devices, parse_document, parse_error, parse_streams
from tests.mtconnect._shared import shared

pytestmark = pytest.mark.interop

DEVICES = {
    "cppagent-demo-Devices-okuma-mazak_2.7.xml": ("2.7", 2, 216),
    "cppagent-sample-NoNamespace_1.1.xml": ("", 1, 48),
    "cppagent-sample-SimpleDevlce_1.4.xml": ("1.4", 2, 38),
    "cppagent-sample-agent.mtconnect.org_1.0.xml": ("1.0", 1, 17),
    "cppagent-sample-data_set_1.8.xml": ("1.8", 1, 13),
    "cppagent-sample-dyn_load_2.2.xml": ("2.2", 1, 6),
    "cppagent-sample-kinematics_2.5_data_set.xml": ("2.5", 1, 1),
    "cppagent-sample-min_config2_2.0.xml": ("2.0", 2, 10),
    "mtconnect-net-devices-okuma-lathe_nonamespace.xml": ("", 1, 99),
    "nist-smstestbed-Devices_1.3.xml": ("1.3", 8, 226),
}


@pytest.mark.parametrize("name", sorted(DEVICES))
def test_devices(name: str) -> None:
    doc = parse_devices(shared("devices", name).read_bytes())
    version, n_dev, n_items = DEVICES[name]
    assert doc.version == version
    assert len(doc.devices) == n_dev
    assert sum(len(d.data_items) for d in doc.devices) == n_items
    for d in doc.devices:
        assert all(i.id and i.category in ("SAMPLE", "EVENT", "CONDITION") for i in d.data_items)


def test_device_details() -> None:
    doc = parse_devices(shared("devices", "nist-smstestbed-Devices_1.3.xml").read_bytes())
    names = [d.name for d in doc.devices]
    assert "Mazak03" in names and "GFAgie01" in names and len([n for n in names if n.startswith("Hurco")]) == 5
    data_set = parse_devices(shared("devices", "cppagent-sample-data_set_1.8.xml").read_bytes())
    reps = {i.representation for d in data_set.devices for i in d.data_items}
    assert {"DATA_SET", "TABLE"} <= reps


STREAMS = {
    "nist-sample-GFAgie01-qdr009_1.3.xml": (2620, 80106, 82725, 82726, 1, 1475083573),
    "nist-sample-GFAgie01-qdr141-all-unavailable_1.3.xml": (26, None, None, 1371313, 1240241, 1475083573),
    "nist-sample-GFAgie01-qdr369-before-restart_1.3.xml": (3164, None, None, 3546632, 3415560, 1475083573),
    "nist-sample-Mazak03-qdr370-after-restart_1.3.xml": (10120, 1, None, 10121, 1, 1475084811),
    "mtconnect-net-current-Mazak_2.0.xml": (121, None, None, 2703542, None, 1665746507),
    "cppagent-test-IntelAgent-dataset_1.8.xml": (2, None, None, 5741581, 5610509, 1649989201),
    "cppagent-test-IntelAgent-empty-streams_1.7.xml": (0, None, None, 4992049, None, 1649989201),
    "cppagent-test-IntelAgent-observations-assets_1.8.xml": (4, None, None, 5741581, None, 1649989201),
}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_streams(name: str) -> None:
    doc = parse_streams(shared("streams", name).read_bytes())
    n, lo, hi, nxt, first, inst = STREAMS[name]
    assert len(doc.observations) == n
    seqs = [o.sequence for o in doc.observations]
    if lo is not None:
        assert min(seqs) == lo
    if hi is not None:
        assert max(seqs) == hi
    assert doc.header.next_sequence == nxt
    if first is not None:
        assert doc.header.first_sequence == first
    assert doc.header.instance_id == inst
    for o in doc.observations:
        assert o.time.tzinfo is not None


def test_unavailable_page_has_no_values() -> None:
    doc = parse_streams(shared("streams", "nist-sample-GFAgie01-qdr141-all-unavailable_1.3.xml").read_bytes())
    assert all(o.value is None for o in doc.observations if o.category != "CONDITION")
    assert all(o.level is None for o in doc.observations if o.category == "CONDITION")


def test_condition_fault_normal_unavailable() -> None:
    doc = parse_streams(shared("streams", "nist-sample-GFAgie01-qdr009_1.3.xml").read_bytes())
    levels = [(o.level, o.native_code) for o in doc.observations if o.data_item_id == "GFAgie01-dtop_3"]
    assert levels == [("Fault", "3AC"), ("Normal", None), (None, None)]


def test_mazak_current_tables_and_sets() -> None:
    doc = parse_streams(shared("streams", "mtconnect-net-current-Mazak_2.0.xml").read_bytes())
    assert doc.version == "2.0"
    tables = [o for o in doc.observations if o.element.endswith("Table") and isinstance(o.value, dict)]
    assert tables and any(isinstance(v, dict) for t in tables for v in t.value.values())  # type: ignore[union-attr]


def test_dataset_removed_and_unavailable() -> None:
    doc = parse_streams(shared("streams", "cppagent-test-IntelAgent-dataset_1.8.xml").read_bytes())
    assert doc.observations[0].value is None
    assert doc.observations[1].value == {"X100": "66", "X101": "ABC", "X102": "44.6", "X103": None}


def test_restart_pair_changes_instance() -> None:
    before = parse_streams(shared("streams", "nist-sample-GFAgie01-qdr369-before-restart_1.3.xml").read_bytes())
    after = parse_streams(shared("streams", "nist-sample-Mazak03-qdr370-after-restart_1.3.xml").read_bytes())
    assert before.header.instance_id != after.header.instance_id
    assert before.header.next_sequence is not None
    assert min(o.sequence for o in after.observations) < before.header.next_sequence


@pytest.mark.parametrize(
    "name", ["cppagent-test-IntelAgent-out-of-range_1.7.xml", "cppagent-test-legacy-error-no-Errors-wrapper_1.7.xml"]
)
def test_errors(name: str) -> None:
    doc = parse_error(shared("errors", name).read_bytes())
    assert doc.codes == ("OUT_OF_RANGE",)
    assert "4871368" in doc.errors[0].message
    assert doc.header.instance_id == 1649989201


def test_assets() -> None:
    a1 = parse_assets(shared("assets", "cppagent-asset1-CuttingTool-KSSP300R4SD43L240.xml").read_bytes())
    t1 = a1.assets[0]
    assert isinstance(t1, CuttingToolAsset)
    assert len(t1.tool_life) == 1
    life = t1.tool_life[0]
    assert (life.type, life.count_direction, life.limit) == ("PART_COUNT", "DOWN", 300.0)
    a3 = parse_assets(shared("assets", "cppagent-asset3-MTConnectAssets_1.2.xml").read_bytes())
    assert a3.version == "1.2" and a3.header.asset_count == 2 and a3.assets[0].removed
    a5 = parse_assets(shared("assets", "cppagent-asset5-CuttingTool-ItemLife.xml").read_bytes())
    t5 = a5.assets[0]
    assert isinstance(t5, CuttingToolAsset)
    assert len(t5.item_life) == 4 and t5.status == ("USED", "AVAILABLE") and t5.location == "4"
    part = parse_assets(shared("assets", "cppagent-full_bore-Part-Inspection_1.2.xml").read_bytes())
    assert isinstance(part.assets[0], GenericAsset) and part.assets[0].asset_type == "Part"
    qif = parse_document(shared("assets", "mtconnect-net-QIFDocumentWrapper.xml").read_bytes())
    assert qif.assets[0].asset_type == "QIFDocumentWrapper"  # type: ignore[union-attr]
