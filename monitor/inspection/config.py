"""Inspection settings in the site file and the program files (pydantic, validated at load).

In a program file, each feature may say how else it is measured (``measured_by``: the CMM's or a
gauge's characteristic, with the measurement system's resolution and repeatability study), and
``inspection.csv`` describes the program's CSV exports. In the site file, ``inspection`` names
folders the daemon watches for result files, the QIF schema to validate against, and how results
are matched to parts.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from monitor.inspection.units import known_unit

__all__ = [
    "PROBE_SOURCE",
    "CsvColumnsConfig",
    "CsvConfig",
    "InspectionProgramConfig",
    "InspectionSiteConfig",
    "MeasuredByConfig",
    "RepeatabilityConfig",
    "ReportConfig",
    "WatchFolderConfig",
]

_STRICT = ConfigDict(extra="forbid", defer_build=True)

PROBE_SOURCE = "probe"
"""The measurement source name of the in-process probe (the feature's probe signals)."""


class RepeatabilityConfig(BaseModel):
    """A measurement system analysis of one feature's gauge, as the quality file records it."""

    model_config = _STRICT
    grr_percent: float | None = Field(
        default=None, ge=0, description="gauge R&R as a percentage of the tolerance (AIAG MSA: under 10 good, 10-30 conditional)"
    )
    ndc: int | None = Field(default=None, ge=0, description="number of distinct categories the gauge resolves (MSA: 5 or more)")
    ev: float | None = Field(default=None, ge=0, description="equipment variation (repeatability) as one standard deviation, mm")
    bias: float | None = Field(default=None, description="bias against a reference (measured minus reference), mm")
    method: str | None = Field(default=None, description="how it was studied, e.g. 'AIAG MSA 4th ed., ANOVA, 10 parts x 3 x 2'")
    reference: str | None = Field(default=None, description="the study's document number or file")
    date: _dt.date | None = Field(default=None, description="when it was done (YYYY-MM-DD)")


class MeasuredByConfig(BaseModel):
    """One way a feature is measured: the probe (source ``probe``) or a CMM or gauge whose result
    files name the characteristic."""

    model_config = _STRICT
    characteristic: str | list[str] | None = Field(
        default=None,
        description="the characteristic in the result files: its name, designator (balloon), UUID or id:<QIF id>; "
        "a list when files name it differently. Required for every source but probe",
    )
    system: str | None = Field(default=None, description="the instrument, e.g. 'Zeiss Contura G2, VAST XXT' or 'air gauge 10H7'")
    resolution: float | None = Field(
        default=None, gt=0, description="smallest step the instrument shows, mm (degrees for angles)"
    )
    repeatability: RepeatabilityConfig | None = Field(default=None, description="the gauge study: see Repeatability")

    def characteristics(self) -> list[str]:
        if self.characteristic is None:
            return []
        return [self.characteristic] if isinstance(self.characteristic, str) else list(self.characteristic)


class CsvColumnsConfig(BaseModel):
    """Column names of a CSV export, for each column the importer understands (see docs/inspection.md)."""

    model_config = _STRICT
    characteristic: str | None = Field(default=None, description="characteristic name or balloon (required in the file)")
    value: str | None = Field(default=None, description="measured value")
    status: str | None = Field(default=None, description="verdict: pass/fail, ok/nok, go/no-go")
    serial: str | None = Field(default=None, description="the part's serial number (matched to part.id)")
    part: str | None = Field(default=None, description="the part's number in the run")
    machine: str | None = Field(default=None, description="the machine that made the part")
    program: str | None = Field(default=None, description="the part program")
    time: str | None = Field(default=None, description="when it was measured")
    lot: str | None = Field(default=None, description="lot or batch id")
    nominal: str | None = Field(default=None, description="nominal value")
    lower: str | None = Field(default=None, description="lower limit (absolute)")
    upper: str | None = Field(default=None, description="upper limit (absolute)")
    lower_tol: str | None = Field(default=None, description="lower tolerance (deviation from nominal)")
    upper_tol: str | None = Field(default=None, description="upper tolerance (deviation from nominal)")
    unit: str | None = Field(default=None, description="unit of the row's values")
    type: str | None = Field(default=None, description="characteristic type (Diameter, Flatness...)")
    designator: str | None = Field(default=None, description="balloon number")


class CsvConfig(BaseModel):
    """How this program's CSV exports read (the CMM's or gauge's column names and number format)."""

    model_config = _STRICT
    columns: CsvColumnsConfig = Field(default_factory=CsvColumnsConfig, description="file column for each column we read")
    delimiter: str | None = Field(default=None, min_length=1, max_length=1, description="field separator; default: detected")
    decimal: Literal[".", ","] = Field(default=".", description="decimal mark of numbers")
    unit: str = Field(default="mm", description="unit of values when no unit column says: mm, um, in, deg, rad")
    time_format: str | None = Field(
        default=None, description="strptime format of the time column, e.g. '%d.%m.%Y %H:%M:%S'; default ISO 8601"
    )
    encoding: str = Field(default="utf-8-sig", description="text encoding, e.g. cp1252 for older Windows exports")
    skip_rows: int = Field(default=0, ge=0, description="lines before the header line")
    lower_tol: Literal["signed", "magnitude"] = Field(
        default="signed", description="signed: the lower tolerance is written -0.013; magnitude: written 0.013"
    )

    @field_validator("unit")
    @classmethod
    def _unit(cls, v: str) -> str:
        if known_unit(v) is None:
            raise ValueError(f"unknown unit {v!r}; use mm, um, in, m, deg or rad")
        return v


class InspectionProgramConfig(BaseModel):
    """How this program's inspection result files read."""

    model_config = _STRICT
    csv: CsvConfig = Field(default_factory=CsvConfig, description="see inspection.csv")


class ReportConfig(BaseModel):
    """What the batch report says about the part and how it judges each feature, for a
    first-article or PPAP review. Command-line options of ``monitor report`` override these."""

    model_config = _STRICT
    customer: str | None = Field(default=None, description="the customer's name")
    customer_part_number: str | None = Field(default=None, description="the part number on the customer's drawing")
    part_name: str | None = Field(default=None, description="what the part is, e.g. 'pump housing'")
    drawing: str | None = Field(default=None, description="drawing number")
    revision: str | None = Field(default=None, description="drawing revision (change level)")
    required_index: Literal["ppk", "cpk"] = Field(
        default="ppk",
        description="the index each feature is judged by: ppk (overall sigma; an initial process study, as PPAP asks of a "
        "first batch) or cpk (within sigma)",
    )
    required: float = Field(
        default=1.67,
        gt=0,
        description="the value the index must reach: 1.67 for an initial study (AIAG PPAP 4th ed.), 1.33 where agreed",
    )
    sign_off: list[str] = Field(
        default_factory=lambda: ["Prepared by (supplier quality)", "Checked by (production)", "Approved by (customer)"],
        description="the signature lines at the end of the report",
    )


class WatchFolderConfig(BaseModel):
    """A folder the daemon watches for new CMM or gauge result files."""

    model_config = _STRICT
    folder: Path = Field(description="the folder, relative to the site file")
    patterns: list[str] = Field(
        default_factory=lambda: ["*.qif", "*.csv"], description="file names to import (case-insensitive glob patterns)"
    )
    machine: str | None = Field(default=None, description="results in this folder come from this machine (like --machine)")
    program: str | None = Field(default=None, description="...and this program (like --program)")
    after: Literal["move", "mark"] = Field(
        default="move",
        description="move: imported files go to <folder>/imported/, refused ones to <folder>/failed/ (with a .why.txt); "
        "mark: files stay and <name>.imported or <name>.failed is written beside them",
    )
    interval_s: float = Field(default=5.0, gt=0, description="how often the folder is looked at")
    settle_s: float = Field(
        default=2.0,
        ge=0,
        description="a file is read once its size and time have not changed for this long (still being written)",
    )


class InspectionSiteConfig(BaseModel):
    """Inspection results (CMM, gauges) for this site: watched folders, validation, matching."""

    model_config = _STRICT
    watch: list[WatchFolderConfig] = Field(default_factory=list, description="folders of result files: see inspection.watch[]")
    qif_schema: Path | None = Field(
        default=None,
        description="QIFDocument.xsd of the QIF 3 schema set: every QIF file (and the plan it names) is validated against it; "
        "relative to the site file",
    )
    match_window_s: float = Field(
        default=900.0, gt=0, description="matching by time: results at most this long after the part ended belong to it"
    )
    timezone: str | None = Field(
        default=None,
        description="time zone of times written without one (IANA name, e.g. Europe/Berlin); default: this computer's",
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {v!r}; use an IANA name like Europe/Berlin or UTC") from exc
        return v

    @model_validator(mode="after")
    def _folders(self) -> InspectionSiteConfig:
        seen: set[Path] = set()
        for w in self.watch:
            if w.folder in seen:
                raise ValueError(f"folder {w.folder} is watched twice")
            seen.add(w.folder)
        return self
