"""The kill drill, as a figure: how long a cell goes unwatched when its owning daemon dies.

Two ``monitor run`` processes with one site file on one PostgreSQL store (a throwaway cluster) and
a simulated MTConnect machine; the owner is SIGKILLed in the middle of a part once it stored half
the batch; the machine keeps making parts. Measured per run: seconds from the SIGKILL until the
standby holds the machine's lease (by the server's lease table), parts stored (expected: every
part once), parts lost and stored twice. The baseline, in the same run: the same drill with a clean
stop (SIGTERM) of the owner, which releases the lease at once (what is left is the standby's poll
and start); ``ratio`` is the SIGKILL takeover over that.

Run: ``nice -n 10 python bench/takeover.py [--lease 15] [--repeat 3] [--parts 12]`` (the default
lease is the product's default, store.lease_s = 15 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.servers.postgres import PASSWORD, running_cluster
from tests.test_takeover import kill_drill


async def _drills(lease_s: float, repeat: int, parts: int, sig: int) -> dict[str, Any]:
    runs = []
    with running_cluster(durable=True) as cluster, tempfile.TemporaryDirectory() as folder:
        for i in range(repeat):
            url = cluster.new_database("drill")
            drill = await kill_drill(Path(folder) / f"run{i}", url, lease_s=lease_s, parts=parts, seed=5 + i, sig=sig)
            numbers = drill.part_numbers
            runs.append(
                {
                    "takeover_s": round(drill.takeover_s, 2),
                    "parts_stored": len(numbers),
                    "parts_lost": len(set(range(1, parts + 1)) - set(numbers)),
                    "parts_twice": len(numbers) - len(set(numbers)),
                    "all_complete": drill.complete,
                }
            )
    times = [r["takeover_s"] for r in runs]
    return {"runs": runs, "takeover_s_median": round(statistics.median(times), 2), "takeover_s_max": max(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lease", type=float, default=15.0, help="store.lease_s of both daemons")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--parts", type=int, default=12)
    args = parser.parse_args()
    os.environ["PGPASSWORD"] = PASSWORD
    killed = asyncio.run(_drills(args.lease, args.repeat, args.parts, signal.SIGKILL))
    stopped = asyncio.run(_drills(args.lease, 1, args.parts, signal.SIGTERM))
    out = {
        "lease_s": args.lease,
        "parts_per_run": args.parts,
        "sigkill": killed,
        "clean_stop (baseline)": stopped,
        "ratio_sigkill_to_clean_stop": round(killed["takeover_s_median"] / max(stopped["takeover_s_median"], 1e-3), 1),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
