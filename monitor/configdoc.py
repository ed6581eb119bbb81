"""The configuration reference, generated from the pydantic models so it can never drift.

``python -m monitor.configdoc`` prints the Markdown tables that configs/README.md embeds between
its ``<!-- reference -->`` markers; a test fails when the two differ, so every key the loader
accepts is documented with its type, default and meaning.
"""

from __future__ import annotations

import types
import typing
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from adapters.mtconnect.config import MtConnectSignal, MtConnectSource
from adapters.opcua.config import BetweenParts, OpcUaOffsets, OpcUaRegister, OpcUaSignal, OpcUaSource
from monitor.config import (
    AngleFeatureConfig,
    AttributeFeatureConfig,
    DashboardConfig,
    OffsetConfig,
    OneSidedFeatureConfig,
    PositionFeatureConfig,
    ProgramConfig,
    ReplaySource,
    SiteConfig,
    SizeFeatureConfig,
    StoreConfig,
    TrackingConfig,
)
from monitor.detect.config import DetectionConfig
from monitor.inspection.config import (
    CsvColumnsConfig,
    CsvConfig,
    InspectionProgramConfig,
    InspectionSiteConfig,
    MeasuredByConfig,
    RepeatabilityConfig,
    ReportConfig,
    WatchFolderConfig,
)
from monitor.sinks.config import InfluxConfig, MqttConfig, RawSignalConfig, SinksConfig, WebhookConfig

__all__ = ["BEGIN", "END", "SECTIONS", "embed", "reference"]

SECTIONS: list[tuple[str, str, type[BaseModel]]] = [
    ("Site file", "", SiteConfig),
    ("store", "store.", StoreConfig),
    ("dashboard", "dashboard.", DashboardConfig),
    ("machines[].tracking", "machines[].tracking.", TrackingConfig),
    ("OPC UA source", "machines[].source.", OpcUaSource),
    ("OPC UA signal with options", "machines[].signals.<signal>.", OpcUaSignal),
    ("offsets (OPC UA machine)", "machines[].offsets.", OpcUaOffsets),
    ("offsets.registers[]", "machines[].offsets.registers[].", OpcUaRegister),
    ("offsets.between_parts", "machines[].offsets.between_parts.", BetweenParts),
    ("MTConnect source", "machines[].source.", MtConnectSource),
    ("MTConnect signal with options", "machines[].signals.<signal>.", MtConnectSignal),
    ("Replay source", "machines[].source.", ReplaySource),
    ("sinks", "sinks.", SinksConfig),
    ("sinks.influx", "sinks.influx.", InfluxConfig),
    ("sinks.influx.signals", "sinks.influx.signals.<signal>.", RawSignalConfig),
    ("sinks.mqtt", "sinks.mqtt.", MqttConfig),
    ("sinks.webhooks[]", "sinks.webhooks[].", WebhookConfig),
    ("inspection (site)", "inspection.", InspectionSiteConfig),
    ("inspection.watch[]", "inspection.watch[].", WatchFolderConfig),
    ("Part-program file", "", ProgramConfig),
    ("Size feature", "features.<name>.", SizeFeatureConfig),
    ("Position feature", "features.<name>.", PositionFeatureConfig),
    ("Angle feature", "features.<name>.", AngleFeatureConfig),
    ("One-sided feature", "features.<name>.", OneSidedFeatureConfig),
    ("Attribute feature", "features.<name>.", AttributeFeatureConfig),
    ("offset (feature)", "features.<name>.offset.", OffsetConfig),
    ("measured_by", "features.<name>.measured_by.<source>.", MeasuredByConfig),
    ("Repeatability", "features.<name>.measured_by.<source>.repeatability.", RepeatabilityConfig),
    ("detection", "detection.", DetectionConfig),
    ("inspection", "inspection.", InspectionProgramConfig),
    ("inspection.csv", "inspection.csv.", CsvConfig),
    ("inspection.csv.columns", "inspection.csv.columns.", CsvColumnsConfig),
    ("report", "report.", ReportConfig),
]


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(annotation))
    if origin is typing.Literal:
        return " / ".join(repr(a) for a in get_args(annotation))
    if origin in (list, tuple):
        return "list of " + _type_name(get_args(annotation)[0])
    if origin is dict:
        return "map of " + _type_name(get_args(annotation)[1])
    if annotation is type(None):
        return "none"
    name = getattr(annotation, "__name__", str(annotation))
    return {
        "str": "text",
        "float": "number",
        "int": "integer",
        "bool": "true/false",
        "Path": "path",
        "SecretStr": "secret text",
    }.get(name, name)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        try:
            value = info.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "(see section)"
        if isinstance(value, BaseModel):
            return "(see section)"
        return repr(value) if value not in ({}, []) else "empty"
    value = info.default
    if value is PydanticUndefined or value is None:
        return "none"
    return (
        repr(str(value))
        if not isinstance(value, (int, float, bool))
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
    )


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    out = []
    for arg in (annotation, *get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            out.append(arg)
    return out


BEGIN = "<!-- reference: generated by `python -m monitor.configdoc --write`; do not edit below -->"
END = "<!-- end of reference -->"


def embed(text: str) -> str:
    """``text`` (a README) with its reference block replaced by the current one."""
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n\n{reference()}\n{END}{tail}"


def reference() -> str:
    """The Markdown reference of every key, section by section."""
    documented = {model for _, _, model in SECTIONS}
    lines: list[str] = []
    for title, prefix, model in SECTIONS:
        doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
        lines += [f"### {title}", "", doc, "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for name, info in model.model_fields.items():
            key = info.alias or name
            meaning = (info.description or "").replace("|", "\\|")
            nested = [m for m in _nested_models(info.annotation) if m in documented and m is not model]
            if nested and not meaning:
                meaning = "see " + ", ".join(next(t for t, _, m in SECTIONS if m is n) for n in nested)
            type_name = _type_name(info.annotation).replace("|", "\\|")
            lines.append(f"| `{prefix}{key}` | {type_name} | {_default(info)} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    from pathlib import Path

    if sys.argv[1:] == ["--write"]:
        target = Path(__file__).resolve().parents[1] / "configs" / "README.md"
        target.write_text(embed(target.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        print(reference())
