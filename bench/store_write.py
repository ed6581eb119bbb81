"""What a part costs to store: SQLite from one daemon against PostgreSQL from N cell daemons.

Each writer is a process that writes parts as a daemon's core does: ``record_part`` with the part,
its measurements, an alert every 25 parts and the detector and tracker states after it (states of
``--state-kb`` KiB: the engine's state grows to tens of KiB late in a batch), one transaction per
part. PostgreSQL writers hold their machine's lease and write fenced (each transaction checks the
lease generation), as a daemon on a shared store does. The PostgreSQL cluster is a throwaway one
with the server's durable defaults (fsync, synchronous_commit on), on a Unix socket; SQLite is in
WAL mode with synchronous=NORMAL, as the monitor opens it.

Printed (JSON): per backend and writer count, parts per second in all, the median and p95 wall time
of one part's transaction, CPU seconds per part in the writers and (PostgreSQL) in the server's
processes, and the share of one core that 1,000 parts per minute cost (writer + server CPU per
part x 1000 / 60). ``ratio`` is each run's per-part wall time against SQLite's one writer, measured
in the same run (the baseline).

Run: ``nice -n 10 python bench/store_write.py [--parts 2000] [--writers 1 2 4]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.model import Alert, AlertKind, AlertState, PartRecord, PartStatus, Severity, SpindleStats, ToolUse
from tests.servers.postgres import PASSWORD, running_cluster

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def part(machine: str, n: int) -> PartRecord:
    end = T0 + timedelta(seconds=40 * n)
    return PartRecord(
        key=f"{machine}/O1001/{end.isoformat()}",
        machine=machine,
        program="O1001",
        part_number=n,
        start=end - timedelta(seconds=35),
        end=end,
        status=PartStatus.COMPLETE,
        measurements={
            "probe.hole1_x": 25.0 + 1e-4 * (n % 7),
            "probe.hole1_y": 40.0 - 1e-4 * (n % 5),
            "probe.hole1_dia": 10.0 + 1e-5 * n,
            "probe.hole2_x": 75.0,
            "probe.hole2_y": 40.0,
            "probe.hole2_dia": 8.0 + 1e-5 * n,
        },
        tools=(ToolUse("12", 100.0 + n, 101.0 + n, 30.0),),
        spindle=SpindleStats(40.0, 55.0, 30.0, 1200.0),
        counter=n,
    )


def alert(machine: str, n: int) -> Alert:
    return Alert(
        id=f"{machine}/O1001/hole1_dia/ewma/{n}",
        machine=machine,
        program="O1001",
        feature="hole1_dia",
        kind=AlertKind.EWMA,
        severity=Severity.WARNING,
        state=AlertState.OPEN,
        part_number=n,
        message="hole1_dia drifting",
        time=T0 + timedelta(seconds=40 * n),
        evidence={"ewma": 10.002, "limit": 10.0015},
    )


def writer(location: str, machine: str, parts: int, state_kb: int, lease_s: float) -> dict[str, Any]:
    """One writer process's work; what it measured (wall per part, its own CPU)."""
    from monitor.store import open_store
    from monitor.store.lease import MachineLease, take_lease

    lease = None
    fence = None
    if location.startswith("postgresql://"):
        lease = MachineLease(location, [machine], cell=f"cell-{machine}", ttl_s=lease_s)
        take_lease(lease, 30)
        fence = lease.fence
    store = open_store(location if lease else Path(location), fence=fence)
    state = {"values": [1e-4 * i for i in range(state_kb * 1024 // 24)]}
    walls = []
    began = time.time()  # wall clock: compared across the writer processes
    cpu0 = time.process_time()
    for n in range(1, parts + 1):
        started = time.perf_counter()
        store.record_part(
            part(machine, n),
            [alert(machine, n)] if n % 25 == 0 else [],
            [(f"drift-engine:{machine}", state), (f"tracker:{machine}", {"n": n})],
        )
        walls.append(time.perf_counter() - started)
        if lease is not None and n % 200 == 0:
            lease.renew()
    cpu = time.process_time() - cpu0
    ended = time.time()
    store.close()
    if lease is not None:
        lease.release()
    return {"walls": walls, "cpu_s": cpu, "began": began, "ended": ended}


def _server_cpu_s(postmaster: int) -> float:
    """CPU seconds (user + system, children that ended included) of the cluster's postmaster and
    its server processes so far."""
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(pid) == postmaster or int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / tick


def run(locations: list[str], parts: int, state_kb: int, lease_s: float, postmaster: int = 0) -> dict[str, Any]:
    """``len(locations)`` writer processes at once, machine m<i> each; figures over all of them."""
    env = {**os.environ, "PGPASSWORD": PASSWORD, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    server0 = _server_cpu_s(postmaster) if postmaster else 0.0
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", loc, f"m{i + 1}", str(parts), str(state_kb), str(lease_s)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for i, loc in enumerate(locations)
    ]
    results = [json.loads(p.communicate()[0]) for p in procs]
    elapsed = max(r["ended"] for r in results) - min(r["began"] for r in results)  # writing, not starting Python
    assert all(p.returncode == 0 for p in procs)
    server = _server_cpu_s(postmaster) - server0 if postmaster else 0.0
    walls = sorted(w for r in results for w in r["walls"])
    total = parts * len(locations)
    cpu_per_part = sum(r["cpu_s"] for r in results) / total
    server_per_part = server / total
    return {
        "writers": len(locations),
        "parts": total,
        "parts_per_s": round(total / elapsed, 1),
        "part_ms_median": round(statistics.median(walls) * 1e3, 3),
        "part_ms_p95": round(walls[int(0.95 * (len(walls) - 1))] * 1e3, 3),
        "writer_cpu_ms_per_part": round(cpu_per_part * 1e3, 3),
        "server_cpu_ms_per_part": round(server_per_part * 1e3, 3),
        "core_share_per_1000_parts_per_min": round((cpu_per_part + server_per_part) * 1000 / 60, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=int, default=2000, help="parts per writer")
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4], help="PostgreSQL writer counts to run")
    parser.add_argument("--state-kb", type=int, default=16, help="size of the detector state written with each part")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        location, machine, parts, state_kb, lease_s = args.worker
        print(json.dumps(writer(location, machine, int(parts), int(state_kb), float(lease_s))))
        return
    out: dict[str, Any] = {"parts_per_writer": args.parts, "state_kb": args.state_kb}
    with tempfile.TemporaryDirectory() as folder:
        baseline = run([str(Path(folder) / "bench.db")], args.parts, args.state_kb, 30.0)
        out["sqlite_1_writer (baseline)"] = baseline
    with running_cluster(durable=True) as cluster:
        postmaster = int((cluster.folder / "data" / "postmaster.pid").read_text().split()[0])
        for n in args.writers:
            url = cluster.new_database("bench")
            row = run([url] * n, args.parts, args.state_kb, 30.0, postmaster)
            row["ratio_part_ms_vs_sqlite"] = round(row["part_ms_median"] / baseline["part_ms_median"], 2)
            row["ratio_parts_per_s_vs_sqlite"] = round(row["parts_per_s"] / baseline["parts_per_s"], 2)
            out[f"postgres_{n}_writers"] = row
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
