"""The embedded store (SQLite, always on): parts, measurements, alerts, detector state, adapter positions."""

from monitor.store.sqlite import SCHEMA_VERSION, Store

__all__ = ["SCHEMA_VERSION", "Store"]
