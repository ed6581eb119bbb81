"""Which part record inspection results belong to: by serial, by part number, or by time.

In that order, each tried only when the file (or the import's options) give what it needs:

1. **serial**: the results' serial number equals the ``part.id`` the probing macro wrote with one
   part (within the machine and program when those are known). When the shop's parts carry ids
   and none has this one, the results stay unmatched: a serial nobody wrote is a question for a
   person, not a guess. When no part of that machine/program carries an id at all, a serial that is
   a plain number is read as the part number (step 2), anything else goes on to step 3.
2. **part number**: the part's number in the run (``monitor import --part N``, a CSV ``part``
   column); it must name exactly one part (give ``--machine`` when two machines run the program).
3. **time**: the part of that machine and program that ended last at or before the inspection
   time, no longer than ``window_s`` before it. This fits a gauge at the machine (the part is
   measured as it comes out), not a CMM that measures every fifth part an hour later: give those
   serial numbers.

Anything else stays unmatched with the reason, is listed by ``monitor inspections --unmatched``,
and is tried again when parts are stored later (the daemon) or at the next import.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from monitor.inspection.model import InspectionResult, MatchMethod
from monitor.store import StoreReader

__all__ = ["Match", "match_result"]


@dataclass(frozen=True, slots=True)
class Match:
    """The part results belong to (None when unmatched), how it was found, and a note: why
    unmatched, or what the match relied on."""

    part_key: str | None
    method: MatchMethod | None
    note: str | None


def _scope(result: InspectionResult) -> str:
    bits = [f"machine {result.machine}" if result.machine else "", f"program {result.program}" if result.program else ""]
    text = " and ".join(b for b in bits if b)
    return f" on {text}" if text else ""


def match_result(store: StoreReader, result: InspectionResult, *, window_s: float, given_part: bool = False) -> Match:
    """Find the part ``result`` belongs to in ``store`` (see the module docstring)."""
    machine, program = result.machine, result.program
    serial = result.serial
    number = result.part_number
    if serial:
        parts = store.parts_with_id(serial, machine=machine, program=program)
        if len(parts) == 1:
            return Match(parts[0].key, MatchMethod.SERIAL, None)
        if len(parts) > 1:
            where = ", ".join(f"{p.machine} {p.program} part {p.part_number}" for p in parts[:5])
            return Match(None, None, f"serial {serial} was written on {len(parts)} parts ({where}); give --machine/--program")
        if store.has_part_ids(machine=machine, program=program):
            if number is None:
                return Match(None, None, f"no part{_scope(result)} carries serial {serial} (part.id) yet")
        elif number is None and serial.strip().isdigit():
            number = int(serial.strip())
    if number is not None:
        parts = store.parts(machine=machine, program=program, first_part=number, last_part=number)
        parts = [p for p in parts if str(p.status) != "aborted"]
        if len(parts) == 1:
            return Match(parts[0].key, MatchMethod.GIVEN if given_part else MatchMethod.PART_NUMBER, None)
        if len(parts) > 1:
            machines = sorted({f"{p.machine} {p.program}" for p in parts})
            return Match(None, None, f"part {number} exists on {', '.join(machines)}; give --machine and --program")
        return Match(None, None, f"no part {number}{_scope(result)} recorded yet")
    if result.time is not None:
        if machine is None and program is None:
            return Match(None, None, "matching by time needs the machine or program (--machine/--program)")
        found = store.parts_ended_before(result.time, machine=machine, program=program, last=1)
        if not found:
            return Match(None, None, f"no part{_scope(result)} ended before {result.time.isoformat(timespec='seconds')}")
        part = found[0]
        if machine is None:
            others = {p.machine for p in store.parts_ended_before(result.time, program=program, last=10)}
            if len(others) > 1:
                return Match(None, None, f"program {program} ran on {', '.join(sorted(others))}; give --machine to match by time")
        gap = result.time - part.end
        if gap > timedelta(seconds=window_s):
            return Match(
                None,
                None,
                f"the last part{_scope(result)} before {result.time.isoformat(timespec='seconds')} ended "
                f"{gap.total_seconds():.0f} s earlier, more than the {window_s:.0f} s window (inspection.match_window_s)",
            )
        return Match(part.key, MatchMethod.TIME, f"inspected {gap.total_seconds():.0f} s after the part ended")
    if serial:
        return Match(
            None, None, f"no part{_scope(result)} carries serial {serial} (part.id), and no part number or time to go by"
        )
    return Match(None, None, "the file names no serial number, part number or time; import it with --part N")
