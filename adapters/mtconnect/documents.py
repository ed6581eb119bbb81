"""What an MTConnect agent sends, as plain frozen records: devices, observations, errors, assets.

The parser (:mod:`adapters.mtconnect.parser`) builds these from any MTConnect version; the agent
(:mod:`adapters.mtconnect.agent`) serves documents built from the same records, so one vocabulary
covers both halves. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from monitor.errors import BadDocument

__all__ = [
    "KNOWN_ERROR_CODES",
    "Asset",
    "AssetsDocument",
    "CuttingToolAsset",
    "DataItem",
    "DataSetValue",
    "Device",
    "DevicesDocument",
    "Document",
    "ErrorDocument",
    "ErrorEntry",
    "GenericAsset",
    "Header",
    "Life",
    "MtcObservation",
    "ObservedValue",
    "StreamsDocument",
    "parse_time",
]

DataSetValue = dict[str, "str | dict[str, str | None] | None"]
"""A DATA_SET (key -> text, None when removed) or TABLE (key -> {cell key -> text}) value."""

ObservedValue = str | DataSetValue | None
"""The raw value of one observation: text, None for UNAVAILABLE, or the entries of a set/table."""

KNOWN_ERROR_CODES: frozenset[str] = frozenset(
    {
        "UNAUTHORIZED",
        "NO_DEVICE",
        "OUT_OF_RANGE",
        "TOO_MANY",
        "INVALID_URI",
        "INVALID_REQUEST",
        "INTERNAL_ERROR",
        "INVALID_PATH",
        "UNSUPPORTED",
        "ASSET_NOT_FOUND",
    }
)
"""Error codes the standard defines; others are kept verbatim, never rejected."""


@dataclass(frozen=True, slots=True)
class Header:
    """The header every document carries; the sequence fields are None where the kind has none."""

    instance_id: int | None = None
    creation_time: str = ""
    sender: str = ""
    version: str = ""
    buffer_size: int | None = None
    next_sequence: int | None = None
    first_sequence: int | None = None
    last_sequence: int | None = None
    asset_count: int | None = None


@dataclass(frozen=True, slots=True)
class DataItem:
    """One data item of the device model with the component path that holds it."""

    id: str
    category: str
    type: str
    device: str
    device_uuid: str = ""
    name: str | None = None
    sub_type: str | None = None
    units: str | None = None
    representation: str | None = None
    component_id: str = ""
    component_type: str = ""
    component_name: str | None = None
    path: tuple[str, ...] = ()
    """Component labels from the device down: each is ``Type`` or ``Type[name]``."""

    @property
    def path_text(self) -> str:
        return "/".join(self.path)

    @property
    def is_table_or_set(self) -> bool:
        return self.representation in ("DATA_SET", "TABLE")


@dataclass(frozen=True, slots=True)
class Device:
    """One device (or the 2.x ``Agent`` device) with its data items in document order."""

    name: str
    uuid: str
    id: str
    data_items: tuple[DataItem, ...]
    element: str = "Device"


@dataclass(frozen=True, slots=True)
class DevicesDocument:
    """A ``/probe`` answer (MTConnectDevices)."""

    version: str
    header: Header
    devices: tuple[Device, ...]


@dataclass(slots=True)
class MtcObservation:
    """One observation of a ``/current`` or ``/sample`` answer.

    ``value`` is the text, None for UNAVAILABLE, or a dict for DATA_SET/TABLE items. For
    conditions ``level`` is ``Normal``/``Warning``/``Fault`` (None when unavailable) and
    ``value`` is the message text and ``element`` the condition's type. Names and subTypes are
    left to the device model (the probe), which keeps the stream walk lean. ``timestamp`` is kept
    as text; :attr:`time` parses it once.
    """

    sequence: int
    timestamp: str
    data_item_id: str
    category: str
    element: str
    value: ObservedValue
    device: str
    component_id: str
    level: str | None = None
    native_code: str | None = None
    asset_type: str | None = None

    @property
    def time(self) -> datetime:
        """The timestamp as an aware UTC datetime; BadDocument when the agent wrote nonsense."""
        try:
            return parse_time(self.timestamp)
        except (ValueError, TypeError, OverflowError) as exc:
            raise BadDocument(f"observation {self.data_item_id} #{self.sequence}: bad timestamp {self.timestamp!r}") from exc


_last_time: tuple[str, datetime | None] = ("", None)
"""The last timestamp parsed, as (text, time): the items of one agent line share one and follow each
other in a document, so they parse it once. Sample streams rarely repeat one otherwise, and a
dictionary of recent ones cost more in hashing every new text than it saved (one tuple, swapped
whole, so threads that parse at once never see a text with another's time)."""


def parse_time(text: str) -> datetime:
    """An MTConnect timestamp as an aware UTC datetime (naive text is taken as UTC)."""
    global _last_time
    last_text, last = _last_time
    if last is not None and last_text == text:
        return last
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        dt = datetime.fromisoformat(_trim_fraction(text))
    tz = dt.tzinfo
    if tz is None:
        dt = dt.replace(tzinfo=UTC)
    elif tz is not UTC:  # "Z" parses to UTC itself: nothing to convert
        dt = dt.astimezone(UTC)
    _last_time = (text, dt)
    return dt


def _trim_fraction(text: str) -> str:
    """Cut fractions beyond microseconds, which some agents write and older parsers refuse."""
    head, dot, rest = text.partition(".")
    if not dot:
        return text
    digits = ""
    i = 0
    while i < len(rest) and rest[i].isdigit():
        digits += rest[i]
        i += 1
    return f"{head}.{digits[:6] or '0'}{rest[i:]}"


@dataclass(frozen=True, slots=True)
class StreamsDocument:
    """A ``/current`` or ``/sample`` answer (MTConnectStreams): observations in document order."""

    version: str
    header: Header
    observations: list[MtcObservation]
    warnings: tuple[str, ...] = ()
    """What the parser accepted but a well-formed document would not have (an undeclared namespace
    prefix): the adapter counts them, discovery shows them."""


@dataclass(frozen=True, slots=True)
class ErrorEntry:
    """One error: the code as the agent wrote it (unknown codes kept) and its message."""

    code: str
    message: str

    @property
    def known(self) -> bool:
        return self.code in KNOWN_ERROR_CODES


@dataclass(frozen=True, slots=True)
class ErrorDocument:
    """An MTConnectError answer, whichever of the three shapes it came in."""

    version: str
    header: Header
    errors: tuple[ErrorEntry, ...]

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(e.code for e in self.errors)


@dataclass(frozen=True, slots=True)
class Life:
    """A ToolLife or ItemLife counter: value with its type, direction, warning and limit."""

    type: str
    count_direction: str
    value: float | None
    warning: float | None = None
    limit: float | None = None
    initial: float | None = None
    item: str | None = None
    """The CuttingItem ``indices`` for an ItemLife; None for the tool's own ToolLife."""


@dataclass(frozen=True, slots=True)
class CuttingToolAsset:
    """A CuttingTool asset: identity, status and life counters (tool-level and per cutting item)."""

    asset_id: str
    tool_id: str
    serial_number: str = ""
    timestamp: str = ""
    device_uuid: str = ""
    removed: bool = False
    status: tuple[str, ...] = ()
    program_tool_number: str | None = None
    location: str | None = None
    tool_life: tuple[Life, ...] = ()
    item_life: tuple[Life, ...] = ()
    asset_type: str = "CuttingTool"


@dataclass(frozen=True, slots=True)
class GenericAsset:
    """Any other asset kind (Part, QIFDocumentWrapper, File...): identity only."""

    asset_id: str
    asset_type: str
    timestamp: str = ""
    device_uuid: str = ""
    removed: bool = False


Asset = CuttingToolAsset | GenericAsset


@dataclass(frozen=True, slots=True)
class AssetsDocument:
    """An ``/assets`` answer (MTConnectAssets), or a bare asset element as an adapter sends it."""

    version: str
    header: Header
    assets: tuple[Asset, ...] = field(default_factory=tuple)


Document = DevicesDocument | StreamsDocument | ErrorDocument | AssetsDocument
