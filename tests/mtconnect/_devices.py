"""A small device model shared by the agent and adapter tests."""

from __future__ import annotations

from adapters.mtconnect.devicemodel import ComponentSpec, DeviceSpec, ItemSpec


def vmc(name: str = "vmc") -> DeviceSpec:
    """A 3-axis mill: spindle load/speed, program, execution, part count, tool, probe result, macro set."""
    p = name
    return DeviceSpec(
        name,
        f"{name}-uuid",
        name,
        items=(
            ItemSpec(f"{p}_avail", "EVENT", "AVAILABILITY"),
            ItemSpec(f"{p}_asset_chg", "EVENT", "ASSET_CHANGED"),
            ItemSpec(f"{p}_asset_rem", "EVENT", "ASSET_REMOVED"),
        ),
        components=(
            ComponentSpec(
                "Controller",
                f"{p}_ctrl",
                items=(ItemSpec(f"{p}_system", "CONDITION", "SYSTEM"),),
                components=(
                    ComponentSpec(
                        "Path",
                        f"{p}_path1",
                        name="path1",
                        items=(
                            ItemSpec(f"{p}_prog", "EVENT", "PROGRAM", name="program"),
                            ItemSpec(f"{p}_exec", "EVENT", "EXECUTION", name="execution"),
                            ItemSpec(f"{p}_pc", "EVENT", "PART_COUNT", name="part_count"),
                            ItemSpec(f"{p}_tool", "EVENT", "TOOL_NUMBER", name="tool"),
                            ItemSpec(
                                f"{p}_hole1_x", "EVENT", "MEASUREMENT_VALUE", name="hole1_x", units="MILLIMETER", discrete=True
                            ),
                            ItemSpec(f"{p}_vars", "EVENT", "VARIABLE", name="macros", representation="DATA_SET"),
                        ),
                    ),
                ),
            ),
            ComponentSpec(
                "Axes",
                f"{p}_axes",
                components=(
                    ComponentSpec(
                        "Rotary",
                        f"{p}_c",
                        name="C",
                        items=(
                            ItemSpec(f"{p}_load", "SAMPLE", "LOAD", units="PERCENT", name="Sload"),
                            ItemSpec(
                                f"{p}_speed",
                                "SAMPLE",
                                "ROTARY_VELOCITY",
                                sub_type="ACTUAL",
                                units="REVOLUTION/MINUTE",
                                name="Srpm",
                            ),
                        ),
                    ),
                ),
            ),
        ),
    )
