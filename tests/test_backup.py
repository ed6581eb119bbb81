"""Backups and retention: `monitor backup` copies the store consistently while the real daemon is
writing parts (SQLite's online backup), the copy opens as a store of its own; raw signal history is
kept as configured and deleted after its retention."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from monitor.config import load_site
from monitor.model import Observation, PartStatus
from monitor.pipeline import Pipeline
from monitor.store import SqliteStore
from monitor.store.backup import backup_store
from tests.daemons import running_daemon
from tests.streams import T0, batch, write_jsonl, write_site
from tests.test_store import alert, part

ROOT = Path(__file__).resolve().parents[1]


def _monitor(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
        check=False,
    )


async def test_backup_while_the_daemon_writes_parts(tmp_path: Path) -> None:
    replay = write_jsonl(tmp_path / "m1.jsonl", batch(400))
    site_path = write_site(tmp_path, replay)
    site_path.write_text(site_path.read_text().replace('path: "', 'speed: 200, path: "'))  # ~10 parts a second
    async with running_daemon(load_site(site_path), stop_timeout_s=30) as running:
        await running.parts(5, timeout_s=60)
        copy = tmp_path / "backup" / "cell.db"
        result = await asyncio.to_thread(_monitor, "backup", "-c", str(site_path), str(copy), "--json", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        # the daemon went on writing during and after the copy
        await running.parts(json.loads(result.stdout)["parts"] + 5, timeout_s=60)
    summary = json.loads(result.stdout)
    db = sqlite3.connect(copy)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one self-contained file
    db.close()
    with SqliteStore(copy) as backup, SqliteStore(load_site(site_path).store_path) as live:
        copied = backup.parts()
        assert len(copied) == summary["parts"] >= 5
        assert live.part_count() > len(copied)  # parts were written after the snapshot
        assert [p.part_number for p in copied] == list(range(1, len(copied) + 1))  # a prefix, no holes
        assert copied == live.parts(last_part=len(copied))
        assert all(p.status is PartStatus.COMPLETE for p in copied)
        assert backup.integrity_problems() == []
    again = _monitor("backup", "-c", str(site_path), str(copy), cwd=tmp_path)
    assert again.returncode == 1 and "exists" in again.stderr
    forced = _monitor("backup", "-c", str(site_path), str(copy), "--force", cwd=tmp_path)
    assert forced.returncode == 0 and "integrity ok" in forced.stdout


def test_every_copy_is_consistent_under_a_busy_writer(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    SqliteStore(db).close()
    done = threading.Event()

    def writer() -> None:
        with SqliteStore(db) as store:
            n = 0
            while not done.is_set():
                n += 1
                store.record_part(part(n), [alert(n)], [("engine", {"n": n})])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        counts = []
        for i in range(20):
            result = backup_store(db, tmp_path / f"copy{i}.db")
            with SqliteStore(tmp_path / f"copy{i}.db") as copy:
                assert copy.integrity_problems() == []
                parts = copy.parts()
                assert [p.part_number for p in parts] == list(range(1, len(parts) + 1))
                assert len(copy.alerts()) == len(parts) == result.parts  # each part with its alert, or neither
                state = copy.load_detector_state("engine")
                assert (state or {"n": 0})["n"] == len(parts)  # the state written with the last part
            counts.append(result.parts)
    finally:
        done.set()
        thread.join()
    assert counts == sorted(counts) and counts[-1] > counts[0]  # the writer really was writing meanwhile


def test_backup_refuses_what_would_lose_data(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    SqliteStore(db).close()
    for target, message in ((db, "is the store itself"), (tmp_path / "none.db", None)):
        try:
            backup_store(tmp_path / "missing.db" if message is None else db, target)
        except Exception as exc:
            assert (message or "no store at") in str(exc)
        else:
            raise AssertionError("backup should have been refused")


def test_signal_history_is_kept_as_configured_and_pruned(tmp_path: Path) -> None:
    replay = write_jsonl(tmp_path / "m1.jsonl", batch(3))
    site_path = write_site(tmp_path, replay)
    site_path.write_text(
        site_path.read_text().replace(
            "store: {path: monitor.db}",
            "store:\n  path: monitor.db\n  signals:\n    spindle.load: {mode: downsample, interval_s: 10}\n"
            "    execution: {mode: change}\n  signal_retention_days: 30",
        )
    )
    site = load_site(site_path)
    with SqliteStore(site.store_path) as store:
        pipeline = Pipeline(site, store)
        pipeline.observe(batch(3))
        loads = store.signal_history("m1", "spindle.load")
        # each cycle has loads at +1 s and +2 s of the same 10 s bucket: one kept per bucket
        assert [(o.time - T0).total_seconds() for o in loads] == [21.0, 41.0, 61.0]
        assert [o.value for o in store.signal_history("m1", "execution")] == ["ACTIVE", "READY"] * 3
        assert store.signal_history("m1", "spindle.speed") == []  # not configured: not kept
        assert store.signal_history("m1", "spindle.load", last=1)[0].value == 40.0
        # retention counts from now: these 2026 values are kept until 30 days after their time
        assert pipeline.prune_history(T0 + timedelta(days=29)) == 0
        pipeline._next_prune = 0.0  # the hourly pacing is not what is tested here
        assert pipeline.prune_history(T0 + timedelta(days=31)) == 9
        assert store.signal_names() == []
    shown = _monitor("signals", "-c", str(site_path), "--json", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout == ""


def test_signals_command_shows_history(tmp_path: Path) -> None:
    site_path = write_site(tmp_path, write_jsonl(tmp_path / "m1.jsonl", batch(1)))
    kept = "store: {path: monitor.db, signals: {spindle.load: {mode: change}}}"
    site_path.write_text(site_path.read_text().replace("store: {path: monitor.db}", kept))
    site = load_site(site_path)
    with SqliteStore(site.store_path) as store:
        store.record_signals([Observation("m1", "spindle.load", datetime(2026, 1, 1, tzinfo=UTC), 42.5)])
    listed = _monitor("signals", "-c", str(site_path), "--json", cwd=tmp_path)
    assert [json.loads(line) for line in listed.stdout.splitlines()] == [{"machine": "m1", "signal": "spindle.load"}]
    values = _monitor("signals", "-c", str(site_path), "--machine", "m1", "--signal", "spindle.load", "--json", cwd=tmp_path)
    assert [json.loads(line) for line in values.stdout.splitlines()] == [{"time": "2026-01-01T00:00:00+00:00", "value": 42.5}]
