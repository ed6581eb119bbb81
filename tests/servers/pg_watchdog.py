"""Stop a test PostgreSQL cluster when the process that started it dies without stopping it.

``pg_ctl start`` detaches the postmaster: a pytest killed with SIGKILL (a landing run terminated, an
out-of-memory kill) never runs its fixture's stop, and the cluster would run on, holding memory
and a socket, until someone stops it by hand. tests/servers/postgres.py starts this script, in a
session of its own (a kill of pytest's process group does not reach it), with a pipe on its stdin
that only pytest holds open. It blocks reading that pipe:

- a line ``done``: pytest stopped the cluster itself; exit.
- end of file without it: pytest is gone (the kernel closed its end of the pipe, however it
  died): stop the cluster (``pg_ctl stop -m immediate``) and delete its folder.

No polling, no timer: the pipe's end of file is the death notice.

    python pg_watchdog.py FOLDER DATA PG_CTL [RUNUSER_PREFIX...]
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    folder, data, pg_ctl, *prefix = argv
    line = sys.stdin.readline()
    if line.strip() == "done":
        return 0
    stop = subprocess.run(
        [*prefix, pg_ctl, "-D", data, "-m", "immediate", "-w", "-t", "30", "stop"], capture_output=True, text=True
    )
    shutil.rmtree(Path(folder), ignore_errors=True)
    with contextlib.suppress(OSError):  # stderr is pytest's (a land log, a terminal that may be gone)
        print(f"pg_watchdog: the test process died; cluster {data} stopped (pg_ctl: {stop.returncode})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
