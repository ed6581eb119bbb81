"""What the SQLite store costs on disk per 1,000 parts, with and without raw signal history.

The demo scenario's machines (two machines, six probed features, alerts where drift is scripted)
make ``--parts`` parts each; their controller events go through the daemon's own
:class:`~monitor.pipeline.Pipeline` (tracking, detection, one transaction per part with its alerts
and detector state) into a fresh store, once without signal history and once keeping
``spindle.load`` downsampled to 1 s and every ``execution`` / ``tool.number`` change. After a WAL
checkpoint the file size is divided by the parts stored.

Prints one JSON object: ``bytes_per_1000_parts`` per variant, the size by table (SQLite's dbstat,
when the library has it) and, as the baseline measured in the same run, the bytes of the same part
records as compact JSON (``ratio`` = store bytes / JSON bytes: the cost of indexes, measurements
table, alerts and state on top of the records themselves).

Run: ``python3 bench/store_size.py [--parts 500] [--seed 1]``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from monitor.codec import part_to_dict
from monitor.config import load_site
from monitor.pipeline import Pipeline
from monitor.sim import SimCell, load_scenario
from monitor.sim.process import PROGRAMS_DIR
from monitor.store import SqliteStore

HISTORY = {
    "spindle.load": {"mode": "downsample", "interval_s": 1.0},
    "execution": {"mode": "change"},
    "tool.number": {"mode": "change"},
}


def measure(cell: SimCell, folder: Path, history: bool) -> dict[str, Any]:
    folder.mkdir(parents=True)
    (folder / "empty.jsonl").write_text("")
    store_config: dict[str, Any] = {"path": "monitor.db"}
    if history:
        store_config["signals"] = HISTORY
    site_file = folder / "site.yaml"
    site_file.write_text(
        yaml.safe_dump(
            {
                "site": "bench",
                "store": store_config,
                "programs": str(PROGRAMS_DIR),
                "machines": [{"id": m.id, "source": {"type": "replay", "path": "empty.jsonl"}} for m in cell.machines],
            }
        )
    )
    site = load_site(site_file)
    json_bytes = 0
    with SqliteStore(site.store_path) as store:
        pipeline = Pipeline(site, store)
        batch = []
        for event in cell.events():
            batch.append(event.observation())
            if len(batch) == 500:
                for part in pipeline.observe(batch).parts:
                    json_bytes += len(json.dumps(part_to_dict(part), separators=(",", ":")))
                batch = []
        for outcome in (pipeline.observe(batch), pipeline.close()):
            for part in outcome.parts:
                json_bytes += len(json.dumps(part_to_dict(part), separators=(",", ":")))
        parts = store.part_count()
        alerts = len(store.alerts())
    db = sqlite3.connect(site.store_path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    try:
        rows = db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")
        tables = {name: int(size) for name, size in rows}
    except sqlite3.OperationalError:  # SQLite built without dbstat
        tables = {}
    history_rows = int(db.execute("SELECT COUNT(*) FROM signals").fetchone()[0])
    db.close()
    size = site.store_path.stat().st_size
    return {
        "parts": parts,
        "alerts": alerts,
        "signal_history_rows": history_rows,
        "file_bytes": size,
        "bytes_per_1000_parts": round(size / parts * 1000),
        "bytes_by_table": tables,
        "baseline_json_bytes_per_1000_parts": round(json_bytes / parts * 1000),
        "ratio": round(size / json_bytes, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=int, default=500, help="parts per machine (the demo cell has two machines)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    cell = SimCell(load_scenario("demo"), seed=args.seed, parts=args.parts)
    minutes = [(p.end - p.start).total_seconds() / 60 for p in cell.parts()]
    with tempfile.TemporaryDirectory() as tmp:
        plain = measure(cell, Path(tmp) / "plain", history=False)
        kept = measure(cell, Path(tmp) / "history", history=True)
    print(
        json.dumps(
            {
                "scenario": "demo",
                "parts_per_machine": args.parts,
                "mean_cycle_min": round(sum(minutes) / len(minutes), 2),
                "without_signal_history": plain,
                "with_signal_history": {"signals": HISTORY, **kept},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
