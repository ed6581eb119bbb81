"""Suite-wide test settings: deterministic property tests."""

from __future__ import annotations

from hypothesis import settings

# Same examples on every run (CI must be deterministic); no per-example deadline on a busy 2-core box.
settings.register_profile("monitor", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("monitor")
