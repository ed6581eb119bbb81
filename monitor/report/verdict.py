"""The verdict on one feature (from one measurement source) a first-article or PPAP review reads.

One rule, used by the batch report and by ``monitor parts --capability`` alike:

- a part out of tolerance makes the feature **not conforming** (whatever its indices say);
- a go/no-go feature with no failed part is **conforming**; the report states the failing rate
  the batch proves (Wilson bound, :func:`monitor.detect.attribute.wilson_interval`);
- a measured feature needs :data:`~monitor.detect.capability.MIN_STUDY_PARTS` values and a
  stable process (:attr:`~monitor.detect.capability.CapabilityResult.stable`), else **no
  verdict** is given, with the reason;
- then the required index (Ppk or Cpk, from the program file's ``report`` or the command line)
  against the required value: **capable** or **not capable**. The point estimate is judged; its
  interval is printed beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from monitor.detect.attribute import wilson_interval
from monitor.detect.capability import CONFIDENCE, MIN_STUDY_PARTS, CapabilityResult

__all__ = ["Verdict", "VerdictLevel", "attribute_verdict", "capability_verdict", "worst"]


class VerdictLevel(StrEnum):
    """From worst to best: the order :func:`worst` ranks them in."""

    NOT_CONFORMING = "not conforming"
    NOT_CAPABLE = "not capable"
    NO_VERDICT = "no verdict"
    CAPABLE = "capable"
    CONFORMING = "conforming"

    @property
    def rank(self) -> int:
        return list(VerdictLevel).index(self)

    @property
    def accepted(self) -> bool:
        return self in (VerdictLevel.CAPABLE, VerdictLevel.CONFORMING)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A verdict and why, in words for the report and the CLI."""

    level: VerdictLevel
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": str(self.level), "verdict_reason": self.reason}

    def text(self) -> str:
        return f"{self.level.upper()}: {self.reason}"


def capability_verdict(cap: CapabilityResult | None, out_of_tolerance: int, index: str, required: float) -> Verdict:
    """The verdict on a measured feature: ``index`` (``ppk`` or ``cpk``) must reach ``required``.

    >>> from monitor.detect.capability import capability
    >>> cap = capability([10.0 + 0.001 * ((i * 7) % 5 - 2) for i in range(30)], 9.98, 10.02)
    >>> capability_verdict(cap, 0, "ppk", 1.67).text()
    'CAPABLE: Ppk 4.63 >= 1.67 (95% interval 3.44-5.83), 30 parts'
    >>> capability_verdict(cap, 1, "ppk", 1.67).level
    <VerdictLevel.NOT_CONFORMING: 'not conforming'>
    """
    name = "Ppk" if index == "ppk" else "Cpk"
    if out_of_tolerance:
        return Verdict(VerdictLevel.NOT_CONFORMING, f"{out_of_tolerance} part(s) out of tolerance")
    if cap is None or cap.n == 0:
        return Verdict(VerdictLevel.NO_VERDICT, "not measured")
    if cap.n < MIN_STUDY_PARTS:
        return Verdict(VerdictLevel.NO_VERDICT, f"{cap.n} parts measured; at least {MIN_STUDY_PARTS} are needed to judge")
    if not cap.stable:
        return Verdict(
            VerdictLevel.NO_VERDICT, "the process was not stable, the indices are not meaningful: " + "; ".join(cap.signals)
        )
    iv = cap.index(index)
    if iv is None:
        return Verdict(VerdictLevel.NO_VERDICT, f"{name} is not defined (no scatter)")
    interval = f"{cap.confidence:.0%} interval {iv.lo:.2f}-{iv.hi:.2f}"
    if iv.value >= required:
        return Verdict(VerdictLevel.CAPABLE, f"{name} {iv.value:.2f} >= {required:g} ({interval}), {cap.n} parts")
    return Verdict(VerdictLevel.NOT_CAPABLE, f"{name} {iv.value:.2f} < {required:g} ({interval}), {cap.n} parts")


def attribute_verdict(checked: int, failed: int) -> Verdict:
    """The verdict on a go/no-go feature.

    >>> attribute_verdict(40, 0).text()
    'CONFORMING: 0 of 40 parts failed (failing rate below 8.8% at 95%)'
    """
    if checked == 0:
        return Verdict(VerdictLevel.NO_VERDICT, "not checked")
    if failed:
        return Verdict(VerdictLevel.NOT_CONFORMING, f"{failed} of {checked} parts failed")
    hi = wilson_interval(0, checked, CONFIDENCE)[1]
    return Verdict(VerdictLevel.CONFORMING, f"0 of {checked} parts failed (failing rate below {hi:.1%} at {CONFIDENCE:.0%})")


def worst(verdicts: list[Verdict]) -> Verdict:
    """The feature's verdict over its sources: the worst of them (no sources: no verdict)."""
    if not verdicts:
        return Verdict(VerdictLevel.NO_VERDICT, "not measured")
    return min(verdicts, key=lambda v: v.level.rank)
