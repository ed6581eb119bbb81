"""``monitor parts --capability`` keeps its rows per (machine, program) between runs and computes
again only the groups whose stored values or program changed: never a stale answer, the same bytes
as a run without the cache (monitor/capcache.py).

Every test goes through the real command (typer's CliRunner) on a real store built through the
store's API; a change made to the store (a new part, a part stored again with other values, a
deleted part, an older part imported) is followed by a run with the cache and a run without it,
which must print the same. Which groups a run read is told by counting the store's
``feature_values`` calls (the one read of a group's values).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
import sqlite3
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from monitor.capcache import CACHE_ENV, cache_file
from monitor.cli import app
from monitor.config import load_site
from monitor.model import PartRecord, PartStatus
from monitor.store import SqliteStore
from monitor.store.postgres import PostgresStore
from monitor.store.sqlite import MIGRATIONS
from tests.stores import Backend

PROGRAMS = Path(__file__).resolve().parents[1] / "monitor" / "sim" / "programs"
T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
GROUPS = (("m1", "O1001"), ("m1", "O2002"), ("m2", "O1001"))


def _part(machine: str, program: str, n: int, rng: np.random.Generator, *, minutes: float | None = None) -> PartRecord:
    """A complete part of ``program`` measuring every probe signal of its features, near nominal."""
    site_programs = _programs()
    measurements = {signal: round(nominal + 0.003 * rng.standard_normal(), 6) for signal, nominal in site_programs[program]}
    end = T0 + timedelta(minutes=n if minutes is None else minutes, seconds=int(machine[1:]))
    return PartRecord(
        key=f"{machine}/{program}/{end.isoformat()}",
        machine=machine,
        program=program,
        part_number=n,
        start=end - timedelta(seconds=50),
        end=end,
        status=PartStatus.INCOMPLETE if n % 13 == 0 else PartStatus.COMPLETE,
        measurements=measurements,
        counter=n,
    )


@functools.cache
def _programs() -> dict[str, list[tuple[str, float]]]:
    """Per program, (probe signal, nominal) of what its features measure."""
    from monitor.model import PositionFeature, SizeFeature

    site = load_site(_site_text_path())
    out: dict[str, list[tuple[str, float]]] = {}
    for name, program in site.programs.items():
        pairs: list[tuple[str, float]] = []
        for feature in program.feature_models():
            if isinstance(feature, PositionFeature):
                pairs += [(axis.signal, axis.nominal) for _, axis in feature.axes]
            elif isinstance(feature, SizeFeature) and feature.signal is not None:
                pairs.append((feature.signal, feature.nominal))
        out[name] = pairs
    return out


@functools.cache
def _site_text_path() -> Path:
    """A site on the simulator's programs (read for their signals and nominals only)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="capcache-programs-"))
    return _write_site(folder, PROGRAMS, {"path": str(folder / "unused.db")})


def _write_site(folder: Path, programs: Path, store: dict[str, str]) -> Path:
    path = folder / "site.yaml"
    where = ", ".join(f"{k}: {v}" for k, v in store.items())
    path.write_text(
        f"site: capcache\nstore: {{{where}}}\nprograms: {programs}\ndashboard: {{enabled: false}}\nmachines:\n"
        "- {id: m1, source: {type: replay, path: x.jsonl}}\n"
        "- {id: m2, source: {type: replay, path: x.jsonl}}\n"
    )
    return path


class Site:
    """A site file over its own copy of the programs (editable) and a store (``backend``: SQLite or
    PostgreSQL) of 3 groups, built through the store's API."""

    def __init__(self, folder: Path, backend: Backend) -> None:
        self.backend = backend
        self.programs = folder / "programs"
        shutil.copytree(PROGRAMS, self.programs)
        where = {"url": backend.location} if isinstance(backend.location, str) else {"path": str(backend.location)}
        self.path = _write_site(folder, self.programs, where)
        self.location = load_site(self.path).store_location
        self.rng = np.random.default_rng(7)
        with backend.open() as store:
            for n in range(1, 41):
                for machine, program in GROUPS:
                    store.record_part(_part(machine, program, n, self.rng))

    def record(self, *parts: PartRecord) -> None:
        with self.backend.open() as store:
            for p in parts:
                assert store.record_part(p)

    def sql(self, statement: str, *args: Any) -> int:
        """A change made to the store outside its API (another tool, retention by hand)."""
        with self.backend.open() as store:
            return raw(store, statement, *args)

    def keys(self, machine: str, program: str) -> list[str]:
        with self.backend.open(read_only=True) as store:
            return [p.key for p in store.parts(machine=machine, program=program, status=PartStatus.COMPLETE)]


def raw(store: SqliteStore | PostgresStore, statement: str, *args: Any) -> int:
    """``statement`` (``?`` placeholders) run in one transaction of either backend; rows changed."""
    if isinstance(store, SqliteStore):
        with store._tx():
            return store._db.execute(statement, args).rowcount
    with store._tx() as db:
        return db.execute(statement.replace("?", "%s"), args).rowcount


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(CACHE_ENV, raising=False)
    return tmp_path / "cache"


@pytest.fixture
def site(tmp_path: Path, cache_home: Path) -> Site:
    """A SQLite store's site (the cache's behaviour apart from the store's stamps)."""
    return Site(tmp_path, Backend("sqlite", tmp_path / "store.db"))


@pytest.fixture
def any_site(tmp_path: Path, cache_home: Path, backend: Backend) -> Site:
    """The site on each backend in turn (the stamps are each backend's own triggers)."""
    return Site(tmp_path, backend)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, str]]:
    """The groups whose values a run read (one count per feature read), from either backend."""
    counts: Counter[tuple[str, str]] = Counter()
    for cls in (SqliteStore, PostgresStore):
        original = cls.feature_values

        def counted(self: Any, machine: str, program: str, *args: Any, _original: Any = original, **kw: Any) -> Any:
            counts[machine, program] += 1
            return _original(self, machine, program, *args, **kw)

        monkeypatch.setattr(cls, "feature_values", counted)
    return counts


def run(site_path: Path, *extra: str, json_out: bool = True, env: dict[str, str] | None = None) -> str:
    args = ["parts", "-c", str(site_path), "--capability", *(["--json"] if json_out else []), *extra]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "220", **(env or {})})
    assert result.exit_code == 0, result.output
    return result.output


def fresh(site_path: Path, *, json_out: bool = True) -> str:
    return run(site_path, "--no-cache", json_out=json_out)


def test_a_warm_run_reads_no_value_and_prints_the_same_bytes(any_site: Site, reads: Counter[tuple[str, str]]) -> None:
    site = any_site
    cold = run(site.path)
    assert set(reads) == set(GROUPS)
    assert cache_file(site.location).exists()
    reads.clear()
    warm = run(site.path)
    assert not reads  # every group from the cache
    assert warm == cold == fresh(site.path)
    assert len(cold.splitlines()) == 11  # O1001: 4 features on 2 machines, O2002: 3
    reads.clear()
    table = run(site.path, json_out=False)
    assert not reads
    assert table == fresh(site.path, json_out=False)
    assert "hole1_pos" in table and "Cpk" in table
    reads.clear()  # a filtered run takes its groups from the cache too
    filtered = run(site.path, "--machine", "m1")
    assert not reads
    assert filtered == run(site.path, "--machine", "m1", "--no-cache")


def _new_part(site: Site) -> None:
    site.record(_part("m1", "O1001", 41, site.rng))


def _stored_again(site: Site) -> None:
    """The same key stored again with other values: the old rows removed, the part recorded anew."""
    key = site.keys("m1", "O1001")[5]
    with site.backend.open(read_only=True) as store:
        old = store.part(key)
    assert old is not None
    for table, column in (("series", "key"), ("measurements", "part_key"), ("parts", "key")):
        site.sql(f"DELETE FROM {table} WHERE {column} = ?", key)
    moved = {signal: value + 0.02 for signal, value in old.measurements.items()}
    site.record(dataclasses.replace(old, measurements=moved))


def _value_updated(site: Site) -> None:
    """One stored value changed in place (a correction made with another tool)."""
    key = site.keys("m1", "O1001")[7]
    assert site.sql("UPDATE series SET value = value + 0.03 WHERE key = ? AND signal = 'probe.hole1_dia'", key) == 1


def _deleted(site: Site) -> None:
    """Retention by hand: the oldest part deleted with its series rows."""
    key = site.keys("m1", "O1001")[0]
    assert site.sql("DELETE FROM series WHERE key = ?", key) > 0
    site.sql("DELETE FROM measurements WHERE part_key = ?", key)
    site.sql("DELETE FROM parts WHERE key = ?", key)


def _imported_older(site: Site) -> None:
    """A part that ended before every stored one (imported from another store, a late upload)."""
    site.record(_part("m1", "O1001", 99, site.rng, minutes=-30))


@pytest.mark.parametrize("change", [_new_part, _stored_again, _value_updated, _deleted, _imported_older])
def test_a_change_of_a_groups_stored_values_computes_that_group_again(
    any_site: Site, reads: Counter[tuple[str, str]], change: Callable[[Site], None]
) -> None:
    site = any_site
    before = run(site.path)
    reads.clear()
    change(site)
    after = run(site.path)
    assert set(reads) == {("m1", "O1001")}  # that group read again, the others from the cache
    assert after == fresh(site.path)
    assert after != before  # the change shows (the test would not tell a stale answer otherwise)
    reads.clear()
    assert run(site.path) == after and not reads  # and is kept in turn


def _edit(site: Site, program: str, old: str, new: str) -> None:
    path = site.programs / f"{program}.yaml"
    text = path.read_text()
    assert text.count(old) >= 1, old
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("tolerance: 0.050", "tolerance: 0.020"),  # a position's zone
        ("lower: 10.000 ", "lower: 10.005 "),  # a size's limit
        ("x: {signal: probe.hole1_x, nominal: 25.000}", "x: {signal: probe.hole1_x, nominal: 25.004}"),  # an axis nominal
        ("x: {signal: probe.hole1_x,", "x: {signal: probe.hole2_x,"),  # a signal
        ("part_end: part_count", "part_end: part_count\nreport: {required_index: cpk, required: 1.33}"),  # the rule
    ],
)
def test_a_changed_program_file_gives_fresh_numbers(site: Site, reads: Counter[tuple[str, str]], old: str, new: str) -> None:
    before = run(site.path)
    reads.clear()
    _edit(site, "O1001", old, new)
    after = run(site.path)
    assert set(reads) == {("m1", "O1001"), ("m2", "O1001")}  # the program's groups; O2002 from the cache
    assert after == fresh(site.path)
    assert after != before


def test_no_cache_and_the_environment_variable_turn_it_off(site: Site, reads: Counter[tuple[str, str]]) -> None:
    fresh(site.path)
    assert set(reads) == set(GROUPS)
    assert not cache_file(site.location).exists()  # nothing kept either
    run(site.path)
    for env in ({CACHE_ENV: "1"}, {CACHE_ENV: "yes"}):
        reads.clear()
        run(site.path, env=env)
        assert set(reads) == set(GROUPS)
    reads.clear()
    run(site.path, env={CACHE_ENV: "0"})  # 0 leaves it on
    assert not reads
    help_text = CliRunner().invoke(app, ["parts", "--help"], env={"COLUMNS": "200"}).output
    assert "--no-cache" in help_text and CACHE_ENV in help_text and "XDG_CACHE_HOME" in help_text


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe\x00garbage", b'{"format": 1, "code": null, "groups": 5}', b"[]", b""],
)
def test_a_corrupt_cache_file_is_ignored_with_a_warning(
    site: Site, reads: Counter[tuple[str, str]], caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    expected = fresh(site.path)
    path = cache_file(site.location)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    reads.clear()
    with caplog.at_level(logging.WARNING, logger="monitor.capcache"):
        assert run(site.path) == expected
    assert set(reads) == set(GROUPS)
    assert any("capability cache" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)
    reads.clear()
    assert run(site.path) == expected and not reads  # written anew, valid


def test_a_corrupt_entry_of_a_valid_file_is_ignored_with_a_warning(
    site: Site, reads: Counter[tuple[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    expected = run(site.path)
    path = cache_file(site.location)
    doc = json.loads(path.read_text())
    doc["groups"][0]["rows"] = "not rows"
    path.write_text(json.dumps(doc))
    reads.clear()
    with caplog.at_level(logging.WARNING, logger="monitor.capcache"):
        assert run(site.path) == expected
    assert set(reads) == set(GROUPS) and "corrupt" in caplog.text


def test_an_unwritable_cache_is_ignored_with_a_warning(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    with caplog.at_level(logging.WARNING, logger="monitor.capcache"):
        assert run(site.path) == fresh(site.path)
    assert "cannot be written" in caplog.text
    assert blocked.read_text() == "a file where the cache folder would be"


def test_the_file_holds_one_entry_per_group_in_the_store(site: Site) -> None:
    run(site.path)
    path = cache_file(site.location)
    doc = json.loads(path.read_text())
    assert [(g["machine"], g["program"]) for g in doc["groups"]] == sorted(GROUPS)
    assert [len(g["rows"]) for g in doc["groups"]] == [4, 3, 4]  # one row per feature
    _edit(site, "O1001", "tolerance: 0.050", "tolerance: 0.040")
    run(site.path)
    doc = json.loads(path.read_text())
    assert len(doc["groups"]) == 3  # replaced, not added
    site.sql("DELETE FROM series WHERE machine = 'm2'")
    site.sql("DELETE FROM parts WHERE machine = 'm2'")
    assert run(site.path) == fresh(site.path)
    doc = json.loads(path.read_text())
    assert [(g["machine"], g["program"]) for g in doc["groups"]] == [("m1", "O1001"), ("m1", "O2002")]


def test_the_stamps_change_with_every_change_of_a_groups_series_and_only_its_own(backend: Backend) -> None:
    rng = np.random.default_rng(1)
    with backend.open() as store:
        for n in range(1, 4):
            for machine, program in GROUPS:
                store.record_part(_part(machine, program, n, rng))
        first = store.series_stamps()
        assert first is not None and set(first) == set(GROUPS)
        assert not store.record_part(_part("m1", "O1001", 1, np.random.default_rng(1)))  # a repeat: nothing changes
        assert store.series_stamps() == first
        changes = [
            'INSERT INTO series (machine, program, signal, "end", key, part_number, value)'
            " VALUES ('m1', 'O1001', 's', '2026-03-02T07:00:00+00:00', 'k', 9, 1.0)",
            "UPDATE series SET value = 2.0 WHERE key = 'k'",
            "DELETE FROM series WHERE key = 'k'",
        ]
        for statement in changes:
            before = store.series_stamps()
            assert before is not None
            assert raw(store, statement) == 1
            after = store.series_stamps()
            assert after is not None
            assert after["m1", "O1001"] != before["m1", "O1001"], statement
            assert {g: s for g, s in after.items() if g != ("m1", "O1001")} == {
                g: s for g, s in before.items() if g != ("m1", "O1001")
            }
        before = store.series_stamps()
        raw(store, "UPDATE series SET machine = 'm9' WHERE machine = 'm2' AND part_number = 1")
        after = store.series_stamps()
        assert before is not None and after is not None
        assert after["m2", "O1001"] != before["m2", "O1001"] and ("m9", "O1001") in after


def test_a_store_of_the_schema_before_stamps_gets_them_when_migrated_and_is_never_cached_before(
    site: Site, reads: Counter[tuple[str, str]]
) -> None:
    stamps_at = next(i for i, m in enumerate(MIGRATIONS) if "series_stamps" in m)
    db = sqlite3.connect(site.location)
    db.executescript(  # what migration 8 and those after it add, undone
        "DROP TRIGGER series_stamp_insert; DROP TRIGGER series_stamp_delete; DROP TRIGGER series_stamp_update;"
        "DROP TABLE series_stamps; DROP INDEX parts_by_part_id; ALTER TABLE parts DROP COLUMN part_id;"
        "CREATE INDEX parts_by_part_id ON parts (json_extract(data, '$.part_id'));"
        f"PRAGMA user_version = {stamps_at};"
    )
    db.close()
    with SqliteStore(site.location, read_only=True) as reader:  # read as it is: no stamps
        assert reader.series_stamps() is None
    reads.clear()
    expected = fresh(site.path)
    once = Counter(reads)
    reads.clear()
    assert run(site.path) == expected and run(site.path) == expected
    assert reads == once + once  # computed twice, nothing kept
    assert not cache_file(site.location).exists()
    with SqliteStore(site.location) as store:  # the daemon migrates it
        stamps = store.series_stamps()
        assert stamps is not None and set(stamps) == set(GROUPS)
    reads.clear()
    assert run(site.path) == expected and set(reads) == set(GROUPS)
    reads.clear()
    assert run(site.path) == expected and not reads


def test_an_upgraded_numeric_library_computes_afresh(
    site: Site, reads: Counter[tuple[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows' last digits are the libraries' arithmetic: a new version of one (its version file
    rewritten, found without importing it) is a new key, as an edited monitor source is."""
    import monitor.capcache

    library = tmp_path / "lib" / "numlib"
    library.mkdir(parents=True)
    (library / "__init__.py").write_text("")
    (library / "version.py").write_text("version = '1.0'\n")
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    monkeypatch.setattr(monitor.capcache, "_LIBRARIES", ("numlib", "no_such_library"))
    expected = run(site.path)
    reads.clear()
    assert run(site.path) == expected and not reads
    (library / "version.py").write_text("version = '1.0.1'\n")
    assert run(site.path) == expected and set(reads) == set(GROUPS)


def _loaded_by_a_run(site: Site, *extra: str) -> tuple[set[str], str]:
    """The modules a ``monitor parts --capability`` process loaded, and what it printed."""
    import subprocess
    import sys

    probe = (
        "import json, sys\nfrom monitor.cli import main\nsys.argv = ['monitor', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)"
    )
    root = Path(__file__).resolve().parents[1]
    args = [sys.executable, "-c", probe, "parts", "-c", str(site.path), "--capability", *extra]
    done = subprocess.run(args, cwd=root, capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "220"})
    return set(json.loads(done.stderr.splitlines()[-1])), done.stdout


def test_an_answer_from_the_cache_loads_neither_numpy_nor_the_report(site: Site) -> None:
    cold, cold_out = _loaded_by_a_run(site, "--json")
    assert {"numpy", "monitor.report.stored"} <= cold  # computing needs them (the test would pass vacuously otherwise)
    assert not {"monitor.report.data", "monitor.report.sources"} & cold  # the batch report's machinery is not
    for extra in (["--json"], []):  # JSON and the table (whose title states the confidence level)
        warm, out = _loaded_by_a_run(site, *extra)
        assert not {"numpy", "monitor.report", "monitor.detect.capability"} & warm
        assert out == fresh(site.path, json_out=bool(extra))
    assert cold_out == fresh(site.path)
