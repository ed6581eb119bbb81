"""Serve simulated machines through our MTConnect agent: one device per machine.

Each simulated machine becomes a device shaped like a real 3-axis mill: a spindle (``Rotary``
named ``S``) with load, speed and override, a controller path with program, execution, part
count and tool number, probe results as ``MEASUREMENT_VALUE`` items (MTConnect 2.2+) and, when
asked, also as a macro-variable ``VARIABLE`` DATA_SET as older controllers publish them. Tool life
goes out as CuttingTool assets (ToolLife ``MINUTES``) announced by ``ASSET_CHANGED``, the way
real agents carry it, so the adapter re-reads the asset; an asset is updated (and announced) only
when its life changed, not each time the tool is loaded again.

``DEFAULT_SIGNAL_MAP`` is the ``signals:`` block a site file uses for such a device (by data
item name, which is unique within a device); :meth:`SimAgentBinding.signal_map` adds the probes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from adapters.mtconnect.agent import MtConnectAgent
from adapters.mtconnect.devicemodel import ComponentSpec, DeviceSpec, ItemSpec
from adapters.mtconnect.documents import CuttingToolAsset, Life
from monitor.sim import SimEvent, SimMachineSpec

__all__ = ["DEFAULT_SIGNAL_MAP", "MACRO_BASE", "SimAgentBinding", "device_for", "signal_map"]

DEFAULT_SIGNAL_MAP: dict[str, str | dict[str, str]] = {
    "spindle.load": "Sload",
    "spindle.speed": "Srpm",
    "spindle.override": "Sovr",
    "tool.number": "tool_number",
    "tool.life": {"type": "ASSET_CHANGED", "key": "MINUTES"},
    "part.count": "part_count",
    "program.name": "program",
    "execution": "execution",
}
"""Canonical signal -> data item name (or selector) of a simulated device; probes are added per machine."""

MACRO_BASE = 500
"""First macro variable number used for probe results in the DATA_SET variant (#500, #501, ...)."""

_NAMES = {
    "spindle.load": ("S", ItemSpec("", "SAMPLE", "LOAD", units="PERCENT", name="Sload")),
    "spindle.speed": ("S", ItemSpec("", "SAMPLE", "ROTARY_VELOCITY", sub_type="ACTUAL", units="REVOLUTION/MINUTE", name="Srpm")),
    "spindle.override": ("S", ItemSpec("", "EVENT", "ROTARY_VELOCITY_OVERRIDE", units="PERCENT", name="Sovr")),
    "tool.number": ("P", ItemSpec("", "EVENT", "TOOL_NUMBER", name="tool_number")),
    "part.count": ("P", ItemSpec("", "EVENT", "PART_COUNT", sub_type="ALL", name="part_count")),
    "program.name": ("P", ItemSpec("", "EVENT", "PROGRAM", sub_type="MAIN", name="program")),
    "execution": ("P", ItemSpec("", "EVENT", "EXECUTION", name="execution")),
}


def _probe_names(spec: SimMachineSpec) -> list[str]:
    return [s for s in spec.signals if s.startswith("probe.")]


def device_for(spec: SimMachineSpec, *, macros: bool = False) -> DeviceSpec:
    """The device model of one simulated machine (ids prefixed with the machine id)."""
    mid = spec.id

    def item(base: ItemSpec, suffix: str) -> ItemSpec:
        return ItemSpec(
            f"{mid}_{suffix}", base.category, base.type, base.sub_type, base.units, base.name, base.representation, base.discrete
        )

    spindle: list[ItemSpec] = []
    path: list[ItemSpec] = []
    for signal, (where, base) in _NAMES.items():
        target = spindle if where == "S" else path
        target.append(item(base, base.name or signal))
    for probe in _probe_names(spec):
        name = probe.removeprefix("probe.")
        path.append(ItemSpec(f"{mid}_probe_{name}", "EVENT", "MEASUREMENT_VALUE", units="MILLIMETER", name=name, discrete=True))
    if macros:
        path.append(ItemSpec(f"{mid}_macros", "EVENT", "VARIABLE", name="macros", representation="DATA_SET"))
    return DeviceSpec(
        mid,
        f"{mid}-uuid",
        mid,
        items=(
            ItemSpec(f"{mid}_avail", "EVENT", "AVAILABILITY", name="avail"),
            ItemSpec(f"{mid}_asset_chg", "EVENT", "ASSET_CHANGED", name="asset_changed"),
            ItemSpec(f"{mid}_asset_rem", "EVENT", "ASSET_REMOVED", name="asset_removed"),
        ),
        components=(
            ComponentSpec(
                "Axes", f"{mid}_axes", components=(ComponentSpec("Rotary", f"{mid}_spindle", name="S", items=tuple(spindle)),)
            ),
            ComponentSpec(
                "Controller",
                f"{mid}_ctrl",
                items=(ItemSpec(f"{mid}_system", "CONDITION", "SYSTEM"),),
                components=(ComponentSpec("Path", f"{mid}_path", name="path1", items=tuple(path)),),
            ),
        ),
    )


def signal_map(spec: SimMachineSpec, *, macros: bool = False) -> dict[str, Any]:
    """The ``signals:`` block for a simulated machine's device (probes by name, or by macro key)."""
    out: dict[str, Any] = {k: v for k, v in DEFAULT_SIGNAL_MAP.items() if k in spec.signals}
    for i, probe in enumerate(_probe_names(spec)):
        name = probe.removeprefix("probe.")
        out[probe] = {"id": f"{spec.id}_macros", "key": str(MACRO_BASE + i)} if macros else name
    return out


class SimAgentBinding:
    """Our agent serving the given simulated machines; :meth:`publish` takes the cell's events.

    >>> # async with SimAgentBinding(cell.machines) as mtc: await run_cell(cell, mtc.publish, speed=60)
    """

    def __init__(
        self,
        machines: Sequence[SimMachineSpec],
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        macros: bool = False,
        buffer_size: int = 131_072,
    ) -> None:
        self.machines = {m.id: m for m in machines}
        self.macros = macros
        self.agent = MtConnectAgent(
            [device_for(m, macros=macros) for m in machines], host=host, port=port, buffer_size=buffer_size
        )
        self._tool: dict[str, str] = {}
        self._lives: dict[tuple[str, str], float | None] = {}
        self._probe_keys = {m.id: {p: str(MACRO_BASE + i) for i, p in enumerate(_probe_names(m))} for m in machines}
        self.changed_at: dict[tuple[str, str], datetime] = {}
        """Per (machine, signal), the time of the newest publish the agent stored (a repeat of the
        current value is not an observation): what a client reading every sequence sees last.
        ``monitor demo`` waits for the daemon to have read up to these."""

    async def __aenter__(self) -> Self:
        await self.agent.start()
        for mid in self.machines:
            self.agent.publish(mid, "avail", "AVAILABLE")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.agent.aclose()

    @property
    def url(self) -> str:
        return self.agent.url

    @property
    def port(self) -> int:
        return self.agent.port

    def signal_map(self, machine: str) -> dict[str, Any]:
        return signal_map(self.machines[machine], macros=self.macros)

    def publish(self, event: SimEvent) -> None:
        """Write one simulated update into the agent (a value, a probe result, or a tool's life)."""
        mid, signal, value = event.machine, event.signal, event.value
        if mid not in self.machines:
            return
        if signal == "tool.number":
            self._tool[mid] = str(int(value)) if isinstance(value, float) else str(value)
        if signal == "tool.life":
            tool = self._tool.get(mid, "0")
            minutes = float(value) if isinstance(value, (int, float)) else None
            if (mid, tool) in self._lives and self._lives[(mid, tool)] == minutes:
                return  # the asset did not change: the agent announces nothing
            self._lives[(mid, tool)] = minutes
            asset = CuttingToolAsset(
                f"{mid}.T{tool}",
                f"T{tool}",
                serial_number=tool,
                program_tool_number=tool,
                status=("USED",),
                tool_life=(Life("MINUTES", "UP", minutes),),
            )
            self.agent.add_cutting_tool(mid, asset, event.time)
            self.changed_at[(mid, signal)] = event.time
            return
        if signal.startswith("probe."):
            if self.macros:
                key = self._probe_keys[mid].get(signal)
                if key is not None:
                    stored = self.agent.publish(mid, "macros", {key: None if value is None else str(value)}, event.time)
                    if stored is not None:
                        self.changed_at[(mid, signal)] = event.time
            if self.agent.publish(mid, signal.removeprefix("probe."), value, event.time) is not None:
                self.changed_at[(mid, signal)] = event.time
            return
        base = _NAMES.get(signal)
        if base is not None and self.agent.publish(mid, base[1].name or signal, value, event.time) is not None:
            self.changed_at[(mid, signal)] = event.time
