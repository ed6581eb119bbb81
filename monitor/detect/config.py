"""The ``detection:`` section of a part-program file.

Every key has a default suited to small batches (dozens to a few hundred parts), so a program file
may leave the section out. ``docs/detection.md`` explains the maths behind each key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["CONFIDENCE", "NELSON_RULES", "DetectionConfig", "OffsetKind"]

CONFIDENCE = 0.95
"""The one level of every capability interval the product shows (:mod:`monitor.detect.capability`
computes with it; kept here, beside the settings every command loads, so that a capability table's
title states it without loading numpy)."""

NELSON_RULES: frozenset[int] = frozenset({1, 2, 3, 5, 6})
"""Nelson rules the individuals chart implements (1: beyond the limit, 2: nine on one side,
3: six rising or falling, 5: two of three beyond 2 sigma on one side, 6: four of five beyond 1 sigma)."""

OffsetKind = Literal["diameter", "radius", "cutter_radius_hole", "cutter_radius_boss", "length"]


class DetectionConfig(BaseModel):
    """Detection settings of one part program; every key has a default suited to small batches."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    arl0: float = Field(
        default=500.0,
        gt=1,
        description=(
            "target in-control average run length of the whole program, in parts: about one false "
            "alarm per arl0 good parts over all features, axes, charts and forecasts together. Three "
            "quarters of that budget set the EWMA and CUSUM limits of every channel, computed at load "
            "(Markov chain ARL); the rest sets the drift evidence a breach forecast needs"
        ),
    )
    ewma_lambda: float = Field(default=0.2, gt=0, le=1, description="EWMA smoothing weight of the newest part")
    ewma_limit: float | None = Field(
        default=None, gt=0, description="EWMA limit width L in asymptotic EWMA sigmas; set it to override arl0"
    )
    cusum_k: float = Field(default=0.5, ge=0, description="CUSUM reference value k in sigmas (half the shift to catch)")
    cusum_h: float | None = Field(default=None, gt=0, description="CUSUM decision interval h in sigmas; overrides arl0")
    cusum_fir: bool = Field(
        default=False, description="fast initial response: start both CUSUM sums at h/2 (quicker on a bad start)"
    )
    run_rules: list[int] = Field(
        default_factory=lambda: [1],
        description=(
            "Nelson rules; subset of 1, 2, 3, 5, 6. Rule 1 (one part beyond the limit) is the re-probe screen: "
            "a single reading raises a re-probe notice and counts as a shift only when the next part "
            "confirms it; rules 2-6 run on the charts' residuals"
        ),
    )
    sigma: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "known part-to-part standard deviation per feature from an earlier batch, mm (per axis for "
            "position features); features not listed learn it from their parts (self-starting: the "
            "charts run on Quesenberry Q statistics)"
        ),
    )
    min_parts: int = Field(
        default=3,
        ge=1,
        description=(
            "parts before the EWMA, CUSUM and run-rule charts may signal (they compare with nominal and the "
            "prior scatter from the first part)"
        ),
    )
    horizon: int = Field(
        default=20,
        ge=1,
        le=100,
        description=(
            "a breach forecast alerts when the risk threshold or the expected first bad part is this many parts ahead or fewer"
        ),
    )
    breach_probability: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="a future part 'breaks' tolerance when its probability of being out of tolerance reaches this",
    )
    forecast_window: int = Field(
        default=60, ge=8, le=400, description="recent parts the trend models are fitted on (since the last step)"
    )
    forecast_min_parts: int = Field(default=4, ge=3, description="parts needed before the trend forecast may alert")
    breach_confidence: float = Field(
        default=0.9,
        gt=0,
        lt=1,
        description=(
            "posterior share of the trend models (weighted by how well the data support them) that must agree "
            "a part within the horizon reaches breach_probability before a breach is forecast"
        ),
    )
    capability: float = Field(
        default=1.33,
        gt=0.3,
        le=10,
        description=(
            "process capability Cp assumed before a feature's scatter is learned: the prior sigma is the "
            "tolerance band / (6 capability); a repeat batch of the program on the same machine uses the "
            "scatter learned in the previous batch instead"
        ),
    )
    prior_dof: float = Field(
        default=4.0,
        ge=1,
        le=200,
        description="weight of the prior sigma, in parts (degrees of freedom) it counts for against the measured scatter",
    )
    setup_sd: float = Field(
        default=0.2,
        gt=0,
        le=2,
        description=(
            "how far from nominal a batch usually starts, as a fraction of the distance from nominal to the limit "
            "(prior sd of the level at the first part): a drift from part 1 is judged against nominal with it"
        ),
    )
    warning_parts: int = Field(
        default=10, ge=1, description="forecast alert escalates to warning when the breach is due within this many parts"
    )
    critical_parts: int = Field(
        default=3, ge=0, description="forecast alert escalates to critical when the breach is due within this many parts"
    )
    escalate_after: int = Field(
        default=5,
        ge=1,
        description="a chart alert (EWMA, CUSUM, run rule) still signalling after this many parts becomes a warning",
    )
    close_after: int = Field(default=3, ge=1, description="consecutive in-control parts that close an alert")
    history: int = Field(default=200, ge=20, le=100_000, description="parts kept per feature for charts and capability")
    attribution_min_r: float = Field(
        default=0.7,
        ge=0,
        le=1,
        description="|correlation| a covariate needs before an alert names it as the likely cause",
    )
    offsets: dict[str, OffsetKind] = Field(
        default_factory=dict,
        description=(
            "how a size feature is corrected: diameter (lathe X in diameter: change = -deviation), radius "
            "(lathe X in radius: -deviation/2), cutter_radius_hole (mill D wear on a bore: +deviation/2), "
            "cutter_radius_boss (-deviation/2), length (Z/H wear: -deviation); default diameter. Position "
            "features are corrected per axis by -deviation"
        ),
    )

    @field_validator("run_rules")
    @classmethod
    def _rules(cls, v: list[int]) -> list[int]:
        bad = sorted(set(v) - NELSON_RULES)
        if bad:
            raise ValueError(f"unknown run rule(s) {bad}; choose from {sorted(NELSON_RULES)}")
        return sorted(set(v))

    @field_validator("sigma")
    @classmethod
    def _sigma(cls, v: dict[str, float]) -> dict[str, float]:
        for name, s in v.items():
            if not s > 0:
                raise ValueError(f"sigma of {name} must be > 0 (got {s})")
        return v

    @model_validator(mode="after")
    def _order(self) -> DetectionConfig:
        if self.critical_parts > self.warning_parts:
            raise ValueError("critical_parts must not exceed warning_parts")
        if self.forecast_min_parts > self.forecast_window:
            raise ValueError("forecast_min_parts must not exceed forecast_window")
        return self
