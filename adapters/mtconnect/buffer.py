"""The agent's bounded observation buffer: sequence numbers, the ring, and state at any sequence.

Sequences are contiguous, so sequence ``s`` lives in slot ``s % size`` and a range read is a
slice of the ring. What falls out of the ring is folded into a base state, so ``/current?at=N``
works for any N still in the buffer (state = base + the ring up to N), as real agents do.
"""

from __future__ import annotations

from adapters.mtconnect.documents import MtcObservation

__all__ = ["ConditionState", "ObservationBuffer", "apply_condition"]

ConditionState = dict[str, MtcObservation]
"""Active conditions of one item keyed by native code ("" for Normal/Unavailable/no code)."""


def apply_condition(state: ConditionState, obs: MtcObservation) -> ConditionState:
    """Fold a condition observation into the item's active set.

    Several Warning/Fault conditions can be active at once (one per native code); a Normal with a
    native code clears that one, a Normal without one clears them all; Unavailable replaces all.

    >>> from adapters.mtconnect.documents import MtcObservation as O
    >>> s = apply_condition({}, O(1, "t", "c", "CONDITION", "SYSTEM", "hot", "d", "x", "Warning", "A"))
    >>> s = apply_condition(s, O(2, "t", "c", "CONDITION", "SYSTEM", "low", "d", "x", "Fault", "B"))
    >>> sorted(s)
    ['A', 'B']
    >>> sorted(apply_condition(s, O(3, "t", "c", "CONDITION", "SYSTEM", "", "d", "x", "Normal", None)))
    ['']
    """
    code = obs.native_code or ""
    if obs.level is None or (obs.level == "Normal" and not code):
        return {"": obs}
    if obs.level == "Normal":
        rest = {k: v for k, v in state.items() if k != code and v.level not in (None, "Normal")}
        return rest or {"": obs}
    rest = {k: v for k, v in state.items() if v.level not in (None, "Normal")}
    rest[code] = obs
    return rest


class ObservationBuffer:
    """A ring of the last ``size`` observations with their sequence numbers."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("buffer size must be at least 1")
        self.size = size
        self.next_sequence = 1
        self._ring: list[MtcObservation | None] = [None] * size
        self._base: dict[str, MtcObservation] = {}
        self._base_cond: dict[str, ConditionState] = {}
        self._latest: dict[str, MtcObservation] = {}
        self._latest_cond: dict[str, ConditionState] = {}

    @property
    def first_sequence(self) -> int:
        return max(1, self.next_sequence - self.size)

    @property
    def last_sequence(self) -> int:
        return max(self.next_sequence - 1, self.first_sequence) if self.next_sequence > 1 else 0

    def unchanged(self, obs: MtcObservation) -> bool:
        """True when ``obs`` repeats the item's current value (agents drop such duplicates)."""
        if obs.category == "CONDITION":
            cur = self._latest_cond.get(obs.data_item_id)
            if not cur:
                return False
            hit = cur.get(obs.native_code or "")
            return hit is not None and hit.level == obs.level and hit.value == obs.value
        prev = self._latest.get(obs.data_item_id)
        return prev is not None and prev.value == obs.value

    def add(self, obs: MtcObservation) -> MtcObservation:
        """Store ``obs`` (which the buffer now owns) under the next sequence number and return it."""
        seq = self.next_sequence
        obs.sequence = seq
        stored = obs
        slot = seq % self.size
        old = self._ring[slot]
        if old is not None:
            self._fold(self._base, self._base_cond, old)
        self._ring[slot] = stored
        self.next_sequence = seq + 1
        self._fold(self._latest, self._latest_cond, stored)
        return stored

    @staticmethod
    def _fold(values: dict[str, MtcObservation], conds: dict[str, ConditionState], obs: MtcObservation) -> None:
        if obs.category == "CONDITION":
            conds[obs.data_item_id] = apply_condition(conds.get(obs.data_item_id, {}), obs)
        else:
            values[obs.data_item_id] = obs

    def range(self, start: int, count: int) -> list[MtcObservation]:
        """Observations with sequence ``start`` .. ``start + count - 1`` still in the buffer."""
        lo = max(start, self.first_sequence)
        hi = min(start + count, self.next_sequence)
        ring, size = self._ring, self.size
        return [o for o in (ring[s % size] for s in range(lo, hi)) if o is not None]

    def state(self, at: int | None = None) -> list[MtcObservation]:
        """The latest observation of every item (all active conditions), now or at sequence ``at``."""
        if at is None:
            values, conds = self._latest, self._latest_cond
        else:
            values, conds = dict(self._base), {k: dict(v) for k, v in self._base_cond.items()}
            for obs in self.range(self.first_sequence, at - self.first_sequence + 1):
                self._fold(values, conds, obs)
        out = list(values.values())
        for state in conds.values():
            out.extend(state.values())
        out.sort(key=lambda o: o.sequence)
        return out
