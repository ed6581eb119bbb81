"""Every public module lists what it defines in ``__all__`` (and nothing that is not there)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import adapters
import monitor

SKIP = {"monitor.__main__"}


def _modules() -> list[str]:
    names = []
    for package in (monitor, adapters):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name not in SKIP and not info.name.rsplit(".", 1)[-1].startswith("_"):
                names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_all_is_complete(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"
    defined = [
        n
        for n, obj in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == name
    ]
    unlisted = sorted(set(defined) - set(exported))
    assert not unlisted, f"{name} defines public {unlisted} but does not list them in __all__"
