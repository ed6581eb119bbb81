"""Every public module of adapters.mtconnect lists exactly its public names in ``__all__``."""

from __future__ import annotations

import importlib
import inspect

import pytest

MODULES = [
    "agent",
    "buffer",
    "client",
    "config",
    "devicemodel",
    "discover",
    "documents",
    "mapping",
    "parser",
    "render",
    "shdr",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_complete(name: str) -> None:
    module = importlib.import_module(f"adapters.mtconnect.{name}")
    exported = set(module.__all__)
    assert all(hasattr(module, n) for n in exported)
    defined = {
        n
        for n, obj in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == module.__name__
    }
    assert defined <= exported, defined - exported
