"""Part tracking: cuts one machine's ordered observation stream into part records.

The tracker is pure (no I/O, no clock): time comes from the observations. It decides where a part
begins and ends (by the program's ``part_end`` rule), collects what happened during it (tools,
spindle load, probe results), and says honestly how the part ended: ``complete`` only when every
probe value the program expects arrived and no data was lost; ``incomplete`` when a value never
came or a gap hit the part; ``aborted`` when the cycle stopped, the program changed mid-part or a
new cycle began without the part counter moving. Aborted and incomplete parts are recorded but
never fed to drift detection.

Controllers are untidy, so the tracker also:

* waits ``grace_s`` after a part ends for probe values that arrive late;
* re-orders observations from two sources of one machine whose clocks differ by up to
  ``max_skew_s`` (a small buffer released by time), after shifting each signal by its source's
  ``clock_offset_s``;
* drops observations replayed after a reconnect (per signal: older than, or identical to, the last
  one seen);
* treats a part counter that goes down (controller restart, counter reset to 0) as a new baseline,
  never as a part.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from monitor.config import ProgramConfig, TrackingConfig
from monitor.model import (
    CONNECTION_SIGNAL,
    GAP_SIGNAL,
    Observation,
    PartRecord,
    PartStatus,
    SpindleStats,
    ToolUse,
    Value,
)

__all__ = ["ExecutionPhase", "PartTracker", "execution_phase", "part_key"]

_RUNNING = frozenset({"ACTIVE", "RUNNING", "RUN", "AUTOMATIC", "EXECUTING", "STARTED"})
_ENDED = frozenset({"READY", "PROGRAM_COMPLETED", "ENDED", "COMPLETED", "IDLE", "FINISHED"})
_ABORTED = frozenset({"STOPPED", "INTERRUPTED", "ABORTED", "RESET", "PROGRAM_STOPPED", "ALARM"})
_PAUSED = frozenset({"FEED_HOLD", "OPTIONAL_STOP", "PROGRAM_OPTIONAL_STOP", "WAIT", "SUSPENDED", "HOLD"})
_RECENT = 65_536
"""How many recent observations are remembered to recognise replays after a reconnect."""
_FALSY = frozenset({"", "0", "0.0", "FALSE", "OFF", "NO", "UNAVAILABLE", "NOT_READY"})


class ExecutionPhase:
    """What an execution state means for a part: running, ended, aborted, paused, or unknown."""

    RUNNING = "running"
    ENDED = "ended"
    ABORTED = "aborted"
    PAUSED = "paused"
    UNKNOWN = "unknown"


def execution_phase(value: Value) -> str:
    """Map MTConnect Execution values and OPC UA program states onto part phases.

    >>> execution_phase("ACTIVE"), execution_phase("Ended"), execution_phase("FEED_HOLD")
    ('running', 'ended', 'paused')
    """
    if not isinstance(value, str):
        return ExecutionPhase.UNKNOWN
    text = value.strip().upper().replace(" ", "_")
    if text in _RUNNING:
        return ExecutionPhase.RUNNING
    if text in _ENDED:
        return ExecutionPhase.ENDED
    if text in _ABORTED:
        return ExecutionPhase.ABORTED
    if text in _PAUSED:
        return ExecutionPhase.PAUSED
    return ExecutionPhase.UNKNOWN


def part_key(machine: str, program: str, end: datetime) -> str:
    """A key that is the same whenever the same part is seen again (replay, daemon restart)."""
    return f"{machine}/{program}/{end.isoformat()}"


@dataclass
class _OpenPart:
    program: str
    start: datetime
    measurements: dict[str, float] = field(default_factory=dict)
    unavailable: set[str] = field(default_factory=set)
    tools: list[ToolUse] = field(default_factory=list)
    load_sum: float = 0.0
    load_n: int = 0
    peak: float | None = None
    energy: float = 0.0
    cutting_time: float = 0.0
    notes: list[str] = field(default_factory=list)
    gap: bool = False


@dataclass
class _PendingPart:
    part: _OpenPart
    end: datetime
    deadline: datetime
    status: PartStatus
    counter: int | None


class PartTracker:
    """Turns one machine's observations into part records.

    Parameters
    ----------
    machine:
        The machine id; observations of other machines are refused (counted).
    programs:
        Program configs by the name the controller reports; they say how parts end and which
        probe values a complete part must have. Parts of unknown programs are still recorded.
    tracking:
        Grace window and clock-skew tolerance.
    signal_offsets:
        Seconds added to the timestamps of each signal (its source's ``clock_offset_s``).
    next_part_numbers:
        Where part numbering resumes per program (from the store after a restart).
    """

    def __init__(
        self,
        machine: str,
        programs: Mapping[str, ProgramConfig],
        tracking: TrackingConfig | None = None,
        *,
        signal_offsets: Mapping[str, float] | None = None,
        next_part_numbers: Mapping[str, int] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        self.machine = machine
        self.programs = dict(programs)
        self.tracking = tracking or TrackingConfig()
        self._grace = timedelta(seconds=self.tracking.grace_s)
        self._skew = timedelta(seconds=self.tracking.max_skew_s)
        self._offsets = {k: timedelta(seconds=v) for k, v in (signal_offsets or {}).items() if v}
        self._next_number: dict[str, int] = dict(next_part_numbers or {})
        self.counts: Counter[str] = Counter()
        self._reorder: list[tuple[datetime, int, Observation]] = []
        self._tiebreak = itertools.count()
        self._latest: datetime | None = None
        self._released: datetime | None = None
        self._recent: dict[tuple[str, datetime, Value], None] = {}
        self._program: str | None = None
        self._phase = ExecutionPhase.UNKNOWN
        self._counter: int | None = None
        self._tool: str | None = None
        self._tool_life: float | None = None
        self._load: tuple[datetime, float] | None = None
        self._speed: float | None = None
        self._open: _OpenPart | None = None
        self._pending: list[_PendingPart] = []
        self._ended_awaiting_count = False
        self._last_end: datetime | None = None
        self._restored_counter = False
        if context:
            self._restore(context)

    # ------------------------------------------------------------------ public
    @property
    def program(self) -> str | None:
        """The program the controller last reported."""
        return self._program

    @property
    def counter(self) -> int | None:
        """The controller's part counter as last reported."""
        return self._counter

    @property
    def holding(self) -> bool:
        """True while observations wait in the re-ordering buffer or an ended part in its grace window:
        resuming a source just after the latest observation would then lose what they still need."""
        return bool(self._reorder or self._pending)

    @property
    def in_part(self) -> bool:
        return self._open is not None

    def update(self, obs: Observation) -> list[PartRecord]:
        """Feed one observation; returns the parts that are now final (usually none)."""
        if obs.machine != self.machine:
            self.counts["other_machine"] += 1
            return []
        offset = self._offsets.get(obs.signal)
        if offset:
            obs = Observation(obs.machine, obs.signal, obs.time + offset, obs.value, obs.source_seq)
        if self._is_replay(obs):
            self.counts["duplicates"] += 1
            return []
        if not self._skew:
            return self._process(obs)
        # UNAVAILABLE values and the adapter's own gap/connection notes carry the server's or our
        # clock, not the controller's: they must neither push the re-ordering horizon nor count as late
        controller_clock = obs.value is not None and obs.signal not in (GAP_SIGNAL, CONNECTION_SIGNAL)
        if self._released is not None and obs.time < self._released and controller_clock:
            # arrived after its turn: processed now, out of order; raise tracking.max_skew_s if this counts up
            self.counts["late_observations"] += 1
        heapq.heappush(self._reorder, (obs.time, next(self._tiebreak), obs))
        if controller_clock and (self._latest is None or obs.time > self._latest):
            self._latest = obs.time
        return self._drain(self._latest - self._skew) if self._latest is not None else []

    def advance(self, now: datetime) -> list[PartRecord]:
        """Tell the tracker that controller time has reached ``now``; releases parts whose grace ran out."""
        return self._drain(now - self._skew) + self._release(now)

    def _drain(self, horizon: datetime | None) -> list[PartRecord]:
        """Process buffered observations up to ``horizon`` (all of them for None), oldest first."""
        out: list[PartRecord] = []
        while self._reorder and (horizon is None or self._reorder[0][0] <= horizon):
            released = heapq.heappop(self._reorder)[2]
            self._released = released.time
            out += self._process(released)
        return out

    def close(self) -> list[PartRecord]:
        """Release everything held (shutdown): buffered observations and parts still in grace.

        The part in progress is not emitted: it has not ended, and emitting it would record a part
        that a restart would then see again.
        """
        out = self._drain(None)
        pending, self._pending = self._pending, []
        return out + [self._finish(p) for p in pending]

    def context(self) -> dict[str, Any]:
        """What the machine was doing (program, counter, tool), JSON-able, to resume after a restart.

        A restarted daemon may resume its source mid-stream, where the program name and counter
        are not repeated; without this the next parts would belong to no program.
        """
        return {
            "program": self._program,
            "counter": self._counter,
            "tool": self._tool,
            "tool_life": self._tool_life,
            "next_part_numbers": dict(self._next_number),
        }

    def _restore(self, context: Mapping[str, Any]) -> None:
        self._program = context.get("program")
        counter = context.get("counter")
        self._counter = int(counter) if isinstance(counter, (int, float)) else None
        self._restored_counter = self._counter is not None
        self._tool = context.get("tool")
        life = context.get("tool_life")
        self._tool_life = float(life) if isinstance(life, (int, float)) else None
        for program, number in dict(context.get("next_part_numbers") or {}).items():
            self._next_number[program] = max(int(number), self._next_number.get(program, 1))

    # ---------------------------------------------------------------- internals
    def _is_replay(self, obs: Observation) -> bool:
        """An observation identical to one seen recently (same signal, time and value) is a replay.

        Only exact repeats count: a controller clock that jumps must not make real values look old.
        """
        if obs.signal in (GAP_SIGNAL, CONNECTION_SIGNAL):
            return False
        fingerprint = (obs.signal, obs.time, obs.value)
        if fingerprint in self._recent:
            return True
        self._recent[fingerprint] = None
        if len(self._recent) > _RECENT:
            del self._recent[next(iter(self._recent))]
        return False

    def _process(self, obs: Observation) -> list[PartRecord]:
        out = self._release(obs.time)
        signal = obs.signal
        if signal.startswith("probe."):
            self._probe(obs)
        elif signal == "program.name":
            out += self._program_name(obs)
        elif signal == "execution":
            out += self._execution(obs)
        elif signal == "part.count":
            out += self._part_count(obs)
        elif signal == "spindle.load":
            self._spindle_load(obs)
        elif signal == "spindle.speed":
            self._spindle_speed(obs)
        elif signal == "tool.number":
            self._tool_number(obs)
        elif signal == "tool.life":
            self._tool_life_update(obs)
        elif signal in (GAP_SIGNAL, CONNECTION_SIGNAL):
            self._gap(obs)
        if self._end_rule() == f"signal:{signal}" and _truthy(obs.value) and self._open is not None:
            out += self._end_part(obs.time, PartStatus.COMPLETE)
        return out

    def _end_rule(self) -> str:
        program = self.programs.get(self._program or "")
        return program.part_end if program is not None else "part_count"

    def _start_part(self, time: datetime) -> None:
        self._open = _OpenPart(self._program or "UNKNOWN", time)
        self._ended_awaiting_count = False
        if self._tool is not None:
            self._open.tools.append(ToolUse(self._tool, self._tool_life, self._tool_life))
        if self._load is not None:
            self._load = (time, self._load[1])

    def _ensure_part(self, time: datetime) -> _OpenPart:
        """The open part, or one opened now for machines that report no execution state."""
        if self._open is None:
            self._start_part(self._last_end if self._last_end is not None else time)
        assert self._open is not None
        return self._open

    def _program_name(self, obs: Observation) -> list[PartRecord]:
        if not isinstance(obs.value, str) or not obs.value:
            return []
        name = obs.value.strip()
        out: list[PartRecord] = []
        if name != self._program and self._open is not None:
            self._open.notes.append(f"program changed to {name} during the part")
            out += self._end_part(obs.time, PartStatus.ABORTED)
        self._program = name
        return out

    def _execution(self, obs: Observation) -> list[PartRecord]:
        phase = execution_phase(obs.value)
        previous, self._phase = self._phase, phase
        out: list[PartRecord] = []
        rule = self._end_rule()
        if phase == ExecutionPhase.RUNNING:
            if self._open is not None and self._ended_awaiting_count and rule == "part_count":
                self._open.notes.append("a new cycle started without the part counter moving")
                out += self._end_part(obs.time, PartStatus.ABORTED)
            if self._open is None:
                self._start_part(obs.time)
        elif phase == ExecutionPhase.ENDED and previous in (ExecutionPhase.RUNNING, ExecutionPhase.PAUSED):
            if self._open is not None:
                if rule == "program_end":
                    out += self._end_part(obs.time, PartStatus.COMPLETE)
                else:
                    self._ended_awaiting_count = True
        elif phase == ExecutionPhase.ABORTED and self._open is not None:
            self._open.notes.append(f"cycle stopped ({obs.value})")
            out += self._end_part(obs.time, PartStatus.ABORTED)
        return out

    def _part_count(self, obs: Observation) -> list[PartRecord]:
        value = obs.number
        if value is None:
            return []
        count = int(value)
        previous, self._counter = self._counter, count
        if previous is None:
            return []
        if self._restored_counter:
            # first counter value after a restart: one step on is a part; a bigger jump means parts
            # were made while nobody watched (the source did not resume): take it as the new baseline
            self._restored_counter = False
            if count > previous + 1 or count < previous:
                self.counts["counter_rebased_after_restart"] += 1
                return []
        if count < previous:
            self.counts["counter_resets"] += 1
            if self._open is not None:
                self._open.notes.append(f"part counter reset from {previous} to {count}")
            return []
        if count > previous and self._end_rule() == "part_count":
            if count > previous + 1:
                self.counts["counter_jumps"] += 1
            part = self._ensure_part(obs.time)
            if count > previous + 1:
                part.notes.append(f"part counter jumped from {previous} to {count}")
            return self._end_part(obs.time, PartStatus.COMPLETE)
        return []

    def _probe(self, obs: Observation) -> None:
        target = self._open
        if target is None:
            for pending in reversed(self._pending):
                if obs.time <= pending.deadline:
                    target = pending.part
                    break
        if target is None:
            if self._phase != ExecutionPhase.UNKNOWN or obs.value is None:
                self.counts["orphan_probe_values"] += 1
                return
            target = self._ensure_part(obs.time)
        value = obs.number
        if value is None and obs.value is not None:
            # NaN, infinity or text from a probe is not a measurement: count it, keep what we had
            self.counts["non_numeric_probe_values"] += 1
            return
        if value is None:
            target.unavailable.add(obs.signal)
            target.measurements.pop(obs.signal, None)
            return
        target.unavailable.discard(obs.signal)
        target.measurements[obs.signal] = value

    def _spindle_load(self, obs: Observation) -> None:
        value = obs.number
        self._integrate(obs.time)
        self._load = (obs.time, value) if value is not None else None
        if value is not None and self._open is not None:
            part = self._open
            part.load_sum += value
            part.load_n += 1
            part.peak = value if part.peak is None else max(part.peak, value)

    def _spindle_speed(self, obs: Observation) -> None:
        self._integrate(obs.time)
        self._speed = obs.number

    def _integrate(self, now: datetime) -> None:
        """Add the time since the last load sample to energy and cutting time of the open part."""
        if self._open is None or self._load is None:
            return
        then, load = self._load
        dt = (now - then).total_seconds()
        if dt <= 0:
            return
        cutting = self._speed > 0 if self._speed is not None else load > 1.0
        if cutting:
            self._open.cutting_time += dt
            self._open.energy += load * dt
            if self._open.tools:
                t = self._open.tools[-1]
                self._open.tools[-1] = ToolUse(t.tool, t.life_start, t.life_end, t.cutting_time + dt)
        self._load = (now, load)

    def _tool_number(self, obs: Observation) -> None:
        if obs.value is None:
            return
        value = obs.number
        tool = str(int(value)) if value is not None and value.is_integer() else str(obs.value)
        if tool == self._tool:
            return
        self._integrate(obs.time)
        self._tool, self._tool_life = tool, None
        if self._open is not None:
            self._open.tools.append(ToolUse(tool))

    def _tool_life_update(self, obs: Observation) -> None:
        value = obs.number
        if value is None:
            return
        self._tool_life = value
        if self._open is not None and self._open.tools:
            t = self._open.tools[-1]
            start = t.life_start if t.life_start is not None else value
            self._open.tools[-1] = ToolUse(t.tool, start, value, t.cutting_time)

    def _gap(self, obs: Observation) -> None:
        if obs.signal == CONNECTION_SIGNAL and obs.value != "lost":
            return
        reason = str(obs.value) if obs.signal == GAP_SIGNAL else "connection lost"
        if self._open is not None:
            self._open.gap = True
            self._open.notes.append(f"data gap: {reason}")
        for pending in self._pending:
            if obs.time <= pending.deadline and pending.status is PartStatus.COMPLETE:
                pending.part.gap = True
                pending.part.notes.append(f"data gap during grace window: {reason}")
        self.counts["gaps"] += 1

    def _end_part(self, time: datetime, status: PartStatus) -> list[PartRecord]:
        part = self._open
        if part is None:
            return []
        self._integrate(time)
        self._open = None
        self._ended_awaiting_count = False
        self._last_end = time
        pending = _PendingPart(part, time, time + self._grace, status, self._counter)
        if status is PartStatus.ABORTED or not self._grace:
            return [self._finish(pending)]
        self._pending.append(pending)
        return []

    def _release(self, now: datetime) -> list[PartRecord]:
        out: list[PartRecord] = []
        while self._pending and self._pending[0].deadline < now:
            out.append(self._finish(self._pending.pop(0)))
        return out

    def _finish(self, pending: _PendingPart) -> PartRecord:
        part = pending.part
        program = self.programs.get(part.program)
        expected = program.probe_signals() if program is not None else []
        missing = tuple(s for s in expected if s not in part.measurements)
        status = pending.status
        notes = list(part.notes)
        if status is PartStatus.COMPLETE and (missing or part.gap):
            status = PartStatus.INCOMPLETE
            if missing:
                notes.append("no value for " + ", ".join(missing))
        number = self._next_number.get(part.program, 1)
        if status is not PartStatus.ABORTED:  # an aborted attempt is not a part: the next one gets its number
            self._next_number[part.program] = number + 1
        self.counts[f"parts_{status}"] += 1
        return PartRecord(
            key=part_key(self.machine, part.program, pending.end),
            machine=self.machine,
            program=part.program,
            part_number=number,
            start=part.start,
            end=pending.end,
            status=status,
            measurements=dict(part.measurements),
            missing=missing,
            tools=tuple(part.tools),
            spindle=SpindleStats(
                mean_load=part.load_sum / part.load_n if part.load_n else None,
                peak_load=part.peak,
                cutting_time=part.cutting_time,
                energy=part.energy if part.load_n else None,
            ),
            counter=pending.counter,
            notes=tuple(notes),
        )


def _truthy(value: Value) -> bool:
    if value is None:
        return False
    if isinstance(value, (int, float)):
        return value != 0
    return value.strip().upper() not in _FALSY
