"""The offline-analysis CSV of a simulated cell: what ``monitor analyze`` reads.

One file per program: a ``part`` column, a ``machine`` column and one column per probe signal of
the program, holding the values as measured (with probe noise); a dropout is an empty cell.
"""

from __future__ import annotations

import csv
from pathlib import Path

from monitor.sim.cell import SimCell

__all__ = ["write_csv", "write_program_csv"]


def write_program_csv(cell: SimCell, program: str, path: Path) -> Path:
    """Write the measured probe values of ``program`` (every machine running it) to ``path``."""
    config = cell.programs().get(program)
    if config is None:
        raise KeyError(f"the cell does not run {program}; it runs {sorted(cell.programs())}")
    signals = config.probe_signals()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["part", "machine", *signals])
        for part in cell.measurements(program):
            row: list[str] = [str(part.part), part.machine]
            for s in signals:
                v = part.measured.get(s)
                row.append("" if v is None else f"{v:.4f}")
            writer.writerow(row)
    return path


def write_csv(cell: SimCell, path: Path) -> dict[str, Path]:
    """Write one ``<program>.csv`` per program into the folder ``path``; returns the files by program."""
    path.mkdir(parents=True, exist_ok=True)
    return {program: write_program_csv(cell, program, path / f"{program}.csv") for program in cell.programs()}
