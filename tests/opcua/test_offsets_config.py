"""The offsets section of the site file: what may be written, with what limits, and what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.config import OpcUaMachine, SiteConfig


def test_mtconnect_machines_are_read_only() -> None:
    with pytest.raises(ValueError, match="MTConnect is read-only"):
        SiteConfig.model_validate(
            {
                "site": "s",
                "machines": [
                    {
                        "id": "m",
                        "source": {"type": "mtconnect", "url": "http://127.0.0.1:5000"},
                        "offsets": {"registers": []},
                    }
                ],
            }
        )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"register": "work_offset", "node": "nsu=u;s=x", "max_change": 0.01, "max_batch_change": 0.02}, "needs axis"),
        ({"register": "tool_diameter_wear", "node": "nsu=u;s=x", "max_change": 0.01, "max_batch_change": 0.02}, "needs the tool"),
        (
            {"register": "work_offset", "axis": "x", "node": "nsu=u;s=x", "max_change": 0.03, "max_batch_change": 0.02},
            "below max_change",
        ),
        (
            {"register": "work_offset", "axis": "x", "node": "ns=3;s=x", "max_change": 0.01, "max_batch_change": 0.02},
            "namespace index",
        ),
        (
            {"register": "work_offset", "axis": "x", "node": "nsu=u;s=x", "max_change": 0, "max_batch_change": 0.02},
            "greater than 0",
        ),
    ],
)
def test_bad_register_entries_are_refused(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OpcUaMachine.model_validate(
            {
                "id": "m",
                "source": {"type": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840"},
                "signals": {"execution": "nsu=u;s=exec"},
                "offsets": {"registers": [entry]},
            }
        )


def test_between_parts_signal_must_be_mapped() -> None:
    with pytest.raises(ValueError, match=r"between_parts\.signal: execution is not among"):
        OpcUaMachine.model_validate(
            {
                "id": "m",
                "source": {"type": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840"},
                "offsets": {
                    "registers": [
                        {
                            "register": "work_offset",
                            "axis": "x",
                            "node": "nsu=u;s=x",
                            "max_change": 0.01,
                            "max_batch_change": 0.02,
                        }
                    ]
                },
            }
        )
