"""Queries that do not grow with the store: the same answers as reading every part, from indexes.

Timings are the benchmark's (bench/store_queries.py); here the behaviour: the answers equal what a
full read gives, and SQLite's query plans use an index with no temporary sort (a temporary B-tree
means every matching row is read and sorted before the first one is returned).
"""

from __future__ import annotations

import dataclasses
import math
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from monitor.codec import alert_from_dict, alert_to_dict, json_bytes, loads, part_from_dict
from monitor.config import load_site
from monitor.detect.capability import Capability, capability
from monitor.model import (
    Alert,
    AlertKind,
    AlertState,
    ConditionState,
    Feature,
    PartRecord,
    PartStatus,
    Severity,
    SpindleStats,
    ToolUse,
    out_of_tolerance,
)
from monitor.queries import alert_row, site_part_rows, stored_alert_row, stored_part_rows
from monitor.store import SqliteStore, StoreReader
from monitor.store.sqlite import MIGRATIONS
from tests.stores import Backend, BackendStore

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
SIGNALS = ("probe.hole1_x", "probe.hole1_y", "probe.hole1_dia")


def part(n: int, machine: str, program: str, *, status: PartStatus = PartStatus.COMPLETE, skip: str = "") -> PartRecord:
    end = T0 + timedelta(minutes=n, seconds=hash(machine) % 7)
    values = {"probe.hole1_x": 25.0 + 1e-4 * (n % 7), "probe.hole1_y": 40.0 - 1e-4 * (n % 5), "probe.hole1_dia": 10.0 + 1e-5 * n}
    return PartRecord(
        key=f"{machine}/{program}/{end.isoformat()}",
        machine=machine,
        program=program,
        part_number=n,
        start=end - timedelta(seconds=50),
        end=end,
        status=status,
        measurements={k: v for k, v in values.items() if k != skip},
        counter=n,
    )


def parts() -> Iterator[PartRecord]:
    for n in range(1, 121):
        for machine, program in (("m1", "O1001"), ("m1", "O2002"), ("m2", "O1001")):
            status = PartStatus.INCOMPLETE if n % 17 == 0 else PartStatus.COMPLETE
            yield part(n, machine, program, status=status, skip="probe.hole1_y" if n % 11 == 0 else "")


def alert(n: int, machine: str, feature: str, severity: Severity = Severity.WARNING) -> Alert:
    return Alert(
        id=f"{machine}/O1001/{feature}/ewma/{n}",
        machine=machine,
        program="O1001",
        feature=feature,
        kind=AlertKind.EWMA,
        severity=severity,
        state=AlertState.OPEN,
        part_number=n,
        message=f"{feature} drifting",
        time=T0 + timedelta(minutes=n),
    )


def _fill(s: BackendStore) -> None:
    for p in parts():
        alerts = (
            [alert(p.part_number, p.machine, "hole1_dia" if p.part_number % 2 else "hole1_pos")]
            if p.part_number % 10 == 0
            else []
        )
        s.record_part(p, alerts)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "q.db") as s:
        _fill(s)
        yield s


@pytest.fixture
def store(backend: Backend) -> Iterator[BackendStore]:
    """The same parts and alerts in each backend: the answers below hold for both."""
    with backend.open() as s:
        _fill(s)
        yield s


def plan(store: SqliteStore, sql: str, args: tuple[object, ...]) -> str:
    return " | ".join(row[3] for row in store._db.execute("EXPLAIN QUERY PLAN " + sql, args))


def test_parts_by_machine_program_and_either_use_an_index_without_a_temporary_sort(sqlite_store: SqliteStore) -> None:
    store = sqlite_store
    real = store._db
    seen: list[tuple[str, tuple[object, ...]]] = []

    class Spy:
        """Records the SQL the store runs, to ask SQLite for its plan."""

        def execute(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor:
            seen.append((sql, tuple(args)))
            return real.execute(sql, args)

    store._db = Spy()  # type: ignore[assignment]
    try:
        store.parts(machine="m1", program="O1001", last=10)
        store.parts(machine="m1", program="O1001", status=PartStatus.COMPLETE, last=10)
        store.parts(machine="m1", last=10)
        store.parts(program="O2002", last=10)
        store.parts(last=10)
        store.alerts(machine="m1", last=5)
        store.alerts(machine="m1", program="O1001", feature="hole1_dia", last=5)
        store.alerts(last=5)
        store.measurement_series("m1", "O1001", SIGNALS, last=50)
        store.feature_values("m1", "O1001", SIGNALS[:2])
        store.feature_values("m1", "O1001", SIGNALS[:2], through=store.parts(machine="m1", program="O1001")[50].key)
        store.part_groups()
    finally:
        store._db = real
    assert len(seen) == 16  # the series: y scanned twice (its latest 50 reach further back than x's: parts lack y)
    for sql, args in seen:
        text = plan(store, sql, args)
        assert "TEMP B-TREE" not in text, (sql, text)
        assert "USING" in text and ("INDEX" in text or "PRIMARY KEY" in text), (sql, text)


def test_latest_parts_are_the_last_of_a_full_read(store: BackendStore) -> None:
    everything = store.parts(machine="m1", program="O1001")
    assert store.parts(machine="m1", program="O1001", last=25) == everything[-25:]
    complete = [p for p in everything if p.status is PartStatus.COMPLETE]
    assert store.parts(machine="m1", program="O1001", status=PartStatus.COMPLETE, last=7) == complete[-7:]
    assert store.parts(machine="m2", last=3) == store.parts(machine="m2")[-3:]


def test_measurement_series_equals_the_complete_parts_measurements(store: BackendStore) -> None:
    complete = store.parts(machine="m1", program="O1001", status=PartStatus.COMPLETE)
    series = store.measurement_series("m1", "O1001", ["probe.hole1_y", "probe.hole1_dia"])
    assert [(p.part_number, p.end, p.key) for p in series] == [(p.part_number, p.end.isoformat(), p.key) for p in complete]
    for point, full in zip(series, complete, strict=True):
        assert point.values == {k: v for k, v in full.measurements.items() if k in ("probe.hole1_y", "probe.hole1_dia")}
    latest = store.measurement_series("m1", "O1001", ["probe.hole1_y"], last=30)
    with_y = [p for p in complete if "probe.hole1_y" in p.measurements]
    assert [p.key for p in latest] == [p.key for p in with_y[-30:]]  # parts without the signal are left out
    assert store.measurement_series("m3", "O1001", SIGNALS) == []


def test_feature_values_are_the_parts_that_measured_every_signal(store: BackendStore) -> None:
    complete = store.parts(machine="m2", program="O1001", status=PartStatus.COMPLETE)
    rows = store.feature_values("m2", "O1001", ["probe.hole1_x", "probe.hole1_y"])
    expected = [
        (p.measurements["probe.hole1_x"], p.measurements["probe.hole1_y"]) for p in complete if "probe.hole1_y" in p.measurements
    ]
    assert rows == expected
    assert store.feature_values("m2", "O1001", ["probe.hole1_dia"]) == [(p.measurements["probe.hole1_dia"],) for p in complete]
    assert store.part_groups() == [("m1", "O1001"), ("m1", "O2002"), ("m2", "O1001")]


def test_latest_series_merge_parts_without_the_first_signal_in_order(store: BackendStore) -> None:
    """The latest parts of several signals are those of a full read, whichever signal a part lacks,
    parts that ended at the same moment ordered by key."""
    for suffix, skip in (("b", ""), ("a", "probe.hole1_dia"), ("c", "probe.hole1_y")):  # one end, three keys
        tied = part(130, "m1", "O1001", skip=skip)
        store.record_part(dataclasses.replace(tied, key=f"{tied.key}/{suffix}"))
    for signals in (["probe.hole1_y", "probe.hole1_dia"], ["probe.hole1_dia", "probe.hole1_y"], list(SIGNALS)):
        full = store.measurement_series("m1", "O1001", signals)
        assert [p.key[-2:] for p in full[-3:]] == ["/a", "/b", "/c"]
        for last in (0, 1, 2, 3, 4, 25, 500):
            assert store.measurement_series("m1", "O1001", signals, last=last) == (full[-last:] if last else [])


def test_feature_values_through_a_part_and_a_chart_give_the_whole_study(store: BackendStore) -> None:
    """``feature_values(through=key)`` are the values up to that part; with the parts after the first
    point of a chart read (:func:`monitor.dashboard.api._study`) they are the very values of a full
    read, wherever the chart begins: parts without a signal, incomplete parts, equal ends."""
    from monitor.dashboard.api import _study
    from monitor.model import AxisRef, PositionFeature, SizeFeature
    from monitor.report import stored_values

    for suffix, skip in (("b", ""), ("a", "probe.hole1_y"), ("c", "")):
        tied = part(130, "m1", "O1001", skip=skip)
        store.record_part(dataclasses.replace(tied, key=f"{tied.key}/{suffix}"))
    store.record_part(part(131, "m1", "O1001", status=PartStatus.INCOMPLETE))
    signals = ["probe.hole1_x", "probe.hole1_y"]
    every = store.feature_values("m1", "O1001", signals)
    complete = [p for p in store.measurement_series("m1", "O1001", signals) if len(p.values) == 2]
    assert len(complete) == len(every) > 100
    for i in (0, 1, 50, len(complete) - 2, len(complete) - 1):
        assert store.feature_values("m1", "O1001", signals, through=complete[i].key) == every[: i + 1]
    pos = PositionFeature("hole1_pos", AxisRef("probe.hole1_x", 25.0), AxisRef("probe.hole1_y", 40.0), 0.05)
    dia = SizeFeature("hole1_dia", "probe.hole1_dia", 10.0, 9.99, 10.01)
    for feature in (pos, dia):
        whole = stored_values(store, "m1", "O1001", feature)
        assert len(whole) > 100
        for last in (1, 2, 3, 4, 7, 60, 1000):
            series = store.measurement_series("m1", "O1001", feature.signals, last=last)
            study = _study(store, "m1", "O1001", feature, series)
            assert study.tolist() == whole.tolist()


def test_latest_alerts_with_filters_are_the_last_of_a_full_read(store: BackendStore) -> None:
    every = store.alerts()
    assert store.alerts(last=4) == every[-4:]
    mine = [a for a in every if a.machine == "m1" and a.feature == "hole1_dia"]
    assert store.alerts(machine="m1", feature="hole1_dia", last=3) == mine[-3:]
    assert store.alerts(severity="critical") == []
    assert len(store.alerts(severity="warning")) == len(every)


def test_migration_fills_the_series_of_a_store_written_before_it(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with SqliteStore(path) as store:
        for p in parts():
            store.record_part(p)
        expected = store.measurement_series("m1", "O2002", SIGNALS)
    # the same parts as the version before wrote them: without what the series migration and every
    # later one add (later migrations create their own tables and indexes: drop those too)
    series_at = next(i for i, m in enumerate(MIGRATIONS) if "CREATE TABLE series" in m)
    old = sqlite3.connect(path)
    for later in MIGRATIONS[series_at + 1 :]:
        for table in re.findall(r"CREATE TABLE (\w+)", later):
            old.execute(f"DROP TABLE IF EXISTS {table}")  # its indexes go with it (a table rebuilt by a later one is named twice)
    old.execute("DROP TABLE series")
    for index in ("parts_by_machine_program_end", "parts_by_machine_end", "parts_by_program_end", "alerts_by_updated"):
        old.execute(f"DROP INDEX {index}")
    old.execute("DROP INDEX alerts_by_machine_updated")
    old.execute(f"PRAGMA user_version = {series_at}")
    old.commit()
    old.close()
    with SqliteStore(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        assert store.measurement_series("m1", "O2002", SIGNALS) == expected
        assert len(expected) == sum(
            1 for p in parts() if (p.machine, p.program) == ("m1", "O2002") and p.status is PartStatus.COMPLETE
        )


@pytest.mark.parametrize("n", [0, 1, 2, 5, 40])
def test_capability_of_a_whole_array_equals_the_running_one(n: int) -> None:
    values = [10.0 + 0.003 * math.sin(i * 1.7) + 0.0001 * i for i in range(n)] + [math.nan]
    for lower, upper in ((9.99, 10.01), (-math.inf, 10.004)):
        detector = Capability(lower, upper)
        for v in values:
            detector.add(v)
        running, whole = detector.result(), capability(np.array(values), lower, upper)
        assert whole.n == running.n
        assert (whole.mean is None) == (running.mean is None) == (n == 0)
        if n:
            assert whole.mean == pytest.approx(running.mean, rel=1e-12, abs=1e-15)
        for name in ("cp", "cpk", "pp", "ppk"):
            a, b = getattr(running, name), getattr(whole, name)
            assert (a is None) == (b is None)
            if a is not None and b is not None:
                assert (b.value, b.lo, b.hi) == pytest.approx((a.value, a.lo, a.hi), rel=1e-9)


def test_feature_cache_keeps_a_chart_until_its_series_changes(store: BackendStore) -> None:
    """The dashboard's per-feature cache answers what a fresh read answers, reads again once a part of
    that machine and program is stored (or the feature is defined anew), and keeps nothing read from
    a store another process may write (a read-only SQLite reader, a shared PostgreSQL store)."""
    import json

    from monitor.dashboard.api import FeatureCache, _points
    from monitor.model import AxisRef, PositionFeature, SizeFeature
    from monitor.report import stored_capability

    pos = PositionFeature("hole1_pos", AxisRef("probe.hole1_x", 25.0), AxisRef("probe.hole1_y", 40.0), 0.05)
    dia = SizeFeature("hole1_dia", "probe.hole1_dia", 10.0, 9.99, 10.01)
    cache = FeatureCache(size=2)

    def fresh(s: BackendStore, feature: PositionFeature | SizeFeature) -> tuple[object, object]:
        points = _points(feature, s.measurement_series("m1", "O1001", feature.signals, last=2000))
        return json.loads(json.dumps(points)), stored_capability(s, "m1", "O1001", feature)

    values, cap = cache.read(store, "m1", "O1001", pos)
    assert (json.loads(values), cap) == fresh(store, pos) and len(json.loads(values)) > 100
    if not isinstance(store, SqliteStore):  # several daemons write a shared PostgreSQL store
        assert store.series_version("m1", "O1001") is None
        assert cache.read(store, "m1", "O1001", pos)[0] is not values and not cache._entries
        return
    again, cap_again = cache.read(store, "m1", "O1001", pos)
    assert again is values and cap_again is cap  # nothing stored since: kept
    store.record_part(part(200, "m2", "O1001"))  # another machine's part: this chart is the same
    assert cache.read(store, "m1", "O1001", pos)[0] is values
    store.record_part(part(201, "m1", "O1001"))
    values2, cap2 = cache.read(store, "m1", "O1001", pos)
    assert values2 is not values and (json.loads(values2), cap2) == fresh(store, pos)
    assert json.loads(values2)[-1]["part_number"] == 201
    moved = PositionFeature("hole1_pos", AxisRef("probe.hole1_x", 25.001), AxisRef("probe.hole1_y", 40.0), 0.05)
    assert (json.loads(cache.read(store, "m1", "O1001", moved)[0]), cache.read(store, "m1", "O1001", moved)[1]) == fresh(
        store, moved
    )  # a reload that changed the feature
    cache.read(store, "m1", "O1001", dia)
    cache.read(store, "m1", "O2002", dia)
    assert len(cache._entries) == 2  # bounded
    kept = cache.read(store, "m1", "O2002", dia)[0]
    cache.clear()
    assert cache.read(store, "m1", "O2002", dia)[0] is not kept
    with SqliteStore(store.path, read_only=True) as reader:
        first = cache.read(reader, "m1", "O1001", dia)[0]
        assert cache.read(reader, "m1", "O1001", dia)[0] is not first and json.loads(first) == fresh(reader, dia)[0]


def test_feature_cache_appends_the_parts_stored_since_to_the_capability_exactly(store: BackendStore) -> None:
    """After a new part the capability of every part is not read again: the new chart read's parts
    after the kept ones are appended, and the answer is the very one a fresh read gives; a part out
    of order, one that is not in the series (incomplete) or several parts between requests that the
    chart does not show all make it read everything again."""

    from monitor.codec import json_bytes
    from monitor.dashboard.api import FeatureCache, _points
    from monitor.model import AxisRef, PositionFeature, SizeFeature
    from monitor.report import stored_capability

    if not isinstance(store, SqliteStore):
        pytest.skip("nothing is kept from a shared PostgreSQL store (see the test above)")
    pos = PositionFeature("hole1_pos", AxisRef("probe.hole1_x", 25.0), AxisRef("probe.hole1_y", 40.0), 0.05)
    dia = SizeFeature("hole1_dia", "probe.hole1_dia", 10.0, 9.99, 10.01)
    cache = FeatureCache()

    def check(appended: bool) -> None:
        before, extended = cache.appended, cache.extended
        for feature in (pos, dia):
            values, cap, counted = cache.counted_read(store, "m1", "O1001", feature)
            assert counted == store.part_count(machine="m1", program="O1001")  # every status: the answer's total_parts
            assert cap == stored_capability(store, "m1", "O1001", feature)
            assert values == json_bytes(_points(feature, store.measurement_series("m1", "O1001", feature.signals, last=2000)))
        assert cache.appended - before == (2 if appended else 0)
        assert cache.extended - extended == (2 if appended else 0)  # the chart too: from the parts after it alone

    check(appended=False)  # the first read: everything
    store.record_part(part(201, "m1", "O1001"))
    check(appended=True)
    store.record_part(part(202, "m1", "O1001"))
    store.record_part(part(203, "m1", "O1001", skip="probe.hole1_y"))  # not a value of the position's study
    check(appended=True)
    store.record_part(part(204, "m1", "O1001", status=PartStatus.INCOMPLETE))  # a part the series does not have
    store.record_part(part(205, "m1", "O1001"))
    check(appended=False)
    store.record_part(part(150, "m1", "O1001"))  # an earlier end than the parts kept (a controller clock set back)
    check(appended=False)
    store.record_part(part(206, "m1", "O1001"))
    check(appended=True)


def test_feature_cache_extends_a_chart_by_the_parts_after_it_as_a_fresh_read_gives(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chart brought up to date from the parts stored since (the oldest dropped past the chart's
    length) is the chart a fresh read gives; a part ending at another UTC offset, or a series write
    that stored nothing (rolled back), make it read the chart again."""
    from monitor.codec import json_bytes
    from monitor.dashboard import api
    from monitor.model import AxisRef, PositionFeature

    store = sqlite_store
    monkeypatch.setattr(api, "SERIES_MAX", 30)
    pos = PositionFeature("hole1_pos", AxisRef("probe.hole1_x", 25.0), AxisRef("probe.hole1_y", 40.0), 0.05)
    cache = api.FeatureCache()

    def check(extended: bool) -> None:
        before = cache.extended
        values, _ = cache.read(store, "m1", "O1001", pos)
        assert values == json_bytes(api._points(pos, store.measurement_series("m1", "O1001", pos.signals, last=30)))
        assert cache.extended - before == (1 if extended else 0)

    check(extended=False)
    for n in range(201, 212):  # one at a time and several (the oldest points leave the chart)
        store.record_part(part(n, "m1", "O1001", skip="probe.hole1_x" if n == 203 else ""))
        if n % 3:
            check(extended=True)
    check(extended=False)  # nothing stored since: the kept answer
    store.record_part(
        dataclasses.replace(part(212, "m1", "O1001"), end=T0.astimezone(timezone(timedelta(hours=-2))) + timedelta(minutes=212))
    )
    check(extended=False)  # another offset (the series orders ends as text: this one before the kept last)
    store.record_part(part(213, "m1", "O1001"))
    check(extended=True)
    store._series_versions["m1", "O1001"] += 1  # a series write that rolled back (counted, nothing stored)
    store.record_part(part(214, "m1", "O1001"))
    check(extended=False)  # one part more, two series writes: read again
    store.record_part(part(215, "m1", "O1001"))
    check(extended=True)
    ahead = T0.astimezone(timezone(timedelta(hours=2))) + timedelta(minutes=216)  # its text sorts after the next part's
    store.record_part(dataclasses.replace(part(216, "m1", "O1001"), end=ahead))
    check(extended=False)
    store.record_part(part(217, "m1", "O1001"))
    check(extended=False)  # the kept chart ends at another offset: read again (the new part is not after it)


def _row_of_record(part: PartRecord, probe: frozenset[str], features: list[Feature]) -> dict[str, object]:
    """A part's row as ``part_row`` made it from the part record before rows were made from the
    stored JSON: the oracle the stored rows must equal."""
    cutting = [t for t in part.tools if t.tool not in probe]
    last = cutting[-1] if cutting else None
    return {
        "machine": part.machine,
        "program": part.program,
        "part": part.part_number,
        "status": str(part.status),
        "end": part.end.isoformat(timespec="seconds"),
        "counter": part.counter,
        "tool": last.tool if last is not None else None,
        "tool_life": last.life_end if last is not None else None,
        "mean_load": part.spindle.mean_load,
        "cutting_s": round(part.spindle.cutting_time, 1),
        "measurements": dict(part.measurements),
        "missing": list(part.missing),
        "notes": list(part.notes),
        "part_id": part.part_id,
        "flags": list(part.flags),
        "key": part.key,
        "out_of_tolerance": out_of_tolerance(features, part.measurements),
    }


def test_part_rows_from_the_stored_json_equal_the_rows_of_the_part_records(backend: Backend, tmp_path: Path) -> None:
    programs = Path(__file__).resolve().parents[1] / "monitor" / "sim" / "programs"
    site_file = tmp_path / "site.yaml"
    site_file.write_text(
        f"site: rows\nstore: {{path: {tmp_path / 'unused.db'}}}\nprograms: {programs}\nmachines:\n"
        "- {id: m1, probe_tool: '99', source: {type: replay, path: x.jsonl}}\n"
        "- {id: m2, source: {type: replay, path: x.jsonl}}\n"
    )
    site = load_site(site_file)
    odd = [
        # the probe last (the cutting tool before it counts), no life counter, no tools at all;
        # readings out of tolerance, an axis missing; notes, flags, an id; an end with fractions of
        # a second and another UTC offset; spindle figures missing; a counter of 0
        dataclasses.replace(
            part(1, "m1", "O1001"),
            tools=(ToolUse("12", 10.0, 10.5, 40.0), ToolUse("99", None, None, 2.0)),
            measurements={"probe.hole1_x": 25.2, "probe.hole1_y": 40.0, "probe.hole1_dia": 10.0},
            notes=("re-probed",),
            flags=("attributed_by_rule",),
            part_id="SN-1",
        ),
        dataclasses.replace(
            part(2, "m1", "O1001", status=PartStatus.INCOMPLETE),
            tools=(ToolUse("7", 3.0, None, 1.25),),
            end=datetime(2026, 3, 2, 8, 0, 1, 987654, tzinfo=timezone(timedelta(hours=2))),
            measurements={"probe.hole1_x": 25.0, "probe.hole1_dia": 9.5},
            missing=("probe.hole1_y",),
            counter=0,
        ),
        dataclasses.replace(
            part(3, "m2", "O2002"),
            spindle=SpindleStats(mean_load=33.5, peak_load=None, cutting_time=61.25, energy=None),
            tools=(ToolUse("99", 1.0, 1.0, 0.0), ToolUse("12", 10.5, 11.0, 40.0)),
        ),
        dataclasses.replace(part(4, "m3", "O9999"), tools=(ToolUse("99", 1.0, 2.0, 0.0),)),  # not in the site
    ]
    with backend.open() as store:
        for p in [*odd, *(part(n, "m2", "O1001", skip="probe.hole1_y" if n % 3 else "") for n in range(5, 40))]:
            store.record_part(p)
        for query in ({}, {"machine": "m1"}, {"machine": "m2", "program": "O1001", "last": 9}, {"machines": ["m3", "m1"]}):
            records = store.parts(**query)
            expected = []
            for p in records:
                config = site.programs.get(p.program)
                expected.append(_row_of_record(p, site.probe_tools(p.machine), config.feature_models() if config else []))
            data = store.part_data(**query)
            assert [part_from_dict(d) for d in data] == records
            assert [loads(t) for t in store.part_texts(**query)] == data
            assert repr(stored_part_rows(site, data)) == repr(expected)  # repr: NaN, 1 against 1.0
            assert repr(site_part_rows(site, records)) == repr(expected)
        assert {r["key"]: r["out_of_tolerance"] for r in stored_part_rows(site, store.part_data(machine="m1"))} == {
            odd[0].key: {"hole1_pos": ["probe.hole1_x", "probe.hole1_y"]},
            odd[1].key: {"hole1_dia": ["probe.hole1_dia"]},
        }
        # what part_from_dict refuses, refused
        stored = store.part_data(machine="m1", last=1)[0]
        with pytest.raises(ValueError):
            part_from_dict({**stored, "status": "bogus"})
        with pytest.raises(ValueError):
            stored_part_rows(site, [{**stored, "status": "bogus"}])
    # NaN and infinities (a SQLite store refuses them: its part_id index reads the JSON): in memory
    unread = dataclasses.replace(
        odd[0], measurements={"probe.hole1_x": math.inf, "probe.hole1_y": 40.0, "probe.hole1_dia": math.nan}
    )
    expected = [_row_of_record(unread, site.probe_tools("m1"), site.programs["O1001"].feature_models())]
    assert repr(site_part_rows(site, [unread])) == repr(expected)


def test_parts_answer_from_kept_rows_is_the_bytes_of_the_rows_made_afresh(backend: Backend, tmp_path: Path) -> None:
    """``/api/parts`` joins the JSON of rows it kept by each part's stored text: the very bytes
    :func:`json_bytes` writes for the rows made afresh, whether kept, made now or mixed; a part whose
    text changed gets a new row; another site empties what was kept; the bound holds; a row orjson
    refuses (an integer beyond 64 bits) sends the whole answer through json_bytes, as before."""
    from monitor.dashboard.api import PartRowCache, _read_parts

    programs = Path(__file__).resolve().parents[1] / "monitor" / "sim" / "programs"

    def site_with(probe: str) -> Any:
        site_file = tmp_path / f"site-{probe}.yaml"
        site_file.write_text(
            f"site: rows\nstore: {{path: {tmp_path / 'unused.db'}}}\nprograms: {programs}\nmachines:\n"
            f"- {{id: m1, probe_tool: '{probe}', source: {{type: replay, path: x.jsonl}}}}\n"
            "- {id: m2, source: {type: replay, path: x.jsonl}}\n"
        )
        return load_site(site_file)

    site = site_with("99")
    with backend.open() as store:
        for n in range(1, 30):
            p = part(n, "m1" if n % 3 else "m2", "O1001" if n % 4 else "O2002", skip="probe.hole1_y" if n % 5 == 0 else "")
            store.record_part(dataclasses.replace(p, tools=(ToolUse("12", 1.0, 1.5, 40.0), ToolUse("99", 2.0, 2.0, 1.0))))

        def fresh(site: Any, **query: Any) -> bytes:
            texts = store.part_texts(**query)
            total = (
                store.part_count(machine=query.get("machine"), program=query.get("program"))
                if query.get("machines") is None
                else sum(store.part_count(machine=m, program=query.get("program")) for m in query["machines"])
            )
            return json_bytes({"parts": stored_part_rows(site, [loads(t) for t in texts]), "total": total})

        cache = PartRowCache(limit=10)  # below the 29 parts: the bound is reached (and a list of 12 made, not kept)
        queries: list[dict[str, Any]] = [
            {"machine": "m1", "program": "O1001", "last": 5},
            {"machine": "m1", "program": "O1001", "last": 12},  # 5 kept, 7 made
            {"machine": None, "program": None, "last": 100},
            {"machine": None, "program": "O2002", "last": 3, "machines": ["m2", "m1"]},
        ]
        for query in [*queries, *queries]:
            args = (query["machine"], query["program"], query["last"], query.get("machines"))
            expected = fresh(site, **{k: v for k, v in query.items() if v is not None})
            assert _read_parts(site, store, *args, cache) == expected
            assert len(cache._rows) <= cache.limit
        other = site_with("12")  # the probe is another tool: every row's last cutting tool changes
        assert _read_parts(other, store, "m1", "O1001", 5, None, cache) == fresh(other, machine="m1", program="O1001", last=5)
        assert fresh(other, machine="m1", program="O1001", last=5) != fresh(site, machine="m1", program="O1001", last=5)
        texts = store.part_texts(machine="m1", last=1)
        # a stored text whose row orjson refuses (an integer beyond 64 bits, which neither backend's
        # columns take: read through a store that adds one): the whole answer as json_bytes writes it
        huge_text = json_bytes({**loads(texts[0]), "counter": 2**70}).decode()

        class WithHugeText:
            def part_texts(self, **query: Any) -> list[str]:
                return [*store.part_texts(**query), huge_text]

            def part_count(self, **query: Any) -> int:
                return store.part_count(**query)

        answer = _read_parts(site, cast(StoreReader, WithHugeText()), "m1", None, 3, None, cache)
        rows = [loads(t) for t in [*store.part_texts(machine="m1", last=3), huge_text]]
        assert answer == json_bytes({"parts": stored_part_rows(site, rows), "total": store.part_count(machine="m1")})
        assert b"1180591620717411303424" in answer
    changed = json_bytes({**loads(texts[0]), "notes": ["re-probed"]}).decode()
    (row,) = cache.rows(site, [changed]) or []
    assert loads(row)["notes"] == ["re-probed"]
    huge = json_bytes({**loads(texts[0]), "counter": 2**70}).decode()
    assert cache.rows(site, [huge]) is None


def _row_of_alert(alert: Alert) -> dict[str, object]:
    """An alert's row as ``alert_row`` made it before rows were made from the stored JSON: the oracle."""
    row = alert_to_dict(alert)
    last = alert.last_part
    span = f"{alert.part_number}-{last}" if last is not None and last != alert.part_number else str(alert.part_number)
    return {**row, "level": row.get("condition") or row["severity"], "parts": span}


def test_alert_rows_from_the_stored_json_equal_the_rows_of_the_alerts(backend: Backend) -> None:
    odd = [
        # a condition spanning parts, one on a single part, none (a machine alert), evidence with
        # advice, a time with microseconds and another offset, acknowledged and closed ones
        dataclasses.replace(
            alert(3, "m1", "hole1_pos"), condition=ConditionState.WARNING, last_part=9, evidence={"advice": {"x": -0.01}}
        ),
        dataclasses.replace(
            alert(4, "m1", "hole1_dia"), condition=ConditionState.RECOVERING, last_part=4, state=AlertState.ACKNOWLEDGED
        ),
        dataclasses.replace(
            alert(5, "m2", ""),
            kind=AlertKind.SIGNAL_LOST,
            severity=Severity.CRITICAL,
            state=AlertState.CLOSED,
            time=datetime(2026, 3, 2, 8, 0, 1, 250000, tzinfo=timezone(timedelta(hours=-5))),
            part_key=None,
        ),
    ]
    with backend.open() as store:
        _fill(store)
        store.record_alerts(odd)
        for query in ({}, {"machine": "m1", "program": "O1001", "feature": "hole1_pos", "last": 50}, {"machines": ["m2"]}):
            alerts = store.alerts(**query)
            data = store.alert_data(**query)
            assert [alert_from_dict(d) for d in data] == alerts
            assert repr([stored_alert_row(d) for d in data]) == repr([_row_of_alert(a) for a in alerts])
            assert repr([alert_row(a) for a in alerts]) == repr([_row_of_alert(a) for a in alerts])
        rows = {r["id"]: (r["level"], r["parts"]) for r in map(stored_alert_row, store.alert_data())}
        assert [rows[a.id] for a in odd] == [("warning", "3-9"), ("recovering", "4"), ("critical", "5")]
    # what alert_from_dict refuses, refused
    stored = alert_to_dict(odd[0])
    for key, bad in (("kind", "bogus"), ("severity", "loud"), ("state", "gone"), ("condition", "meh")):
        with pytest.raises(ValueError):
            alert_from_dict({**stored, key: bad})
        with pytest.raises(ValueError):
            stored_alert_row({**stored, key: bad})
