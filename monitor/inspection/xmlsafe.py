"""Reading an XML file we did not write, safely: no DTD, no entities, no network, bounded size.

A CMM result file comes from another machine, a network share, a USB stick. Like every XML input
of the monitor (the MTConnect parser does the same), it is parsed by lxml with entity resolution,
DTD loading and network access off and no ``huge_tree``; any DOCTYPE or ENTITY declaration is
refused before parsing (billion laughs, external entities), and again after parsing for encodings
the byte check cannot see (UTF-16). Schema validation, when a schema is configured, compiles the
schema once per file path and reports the first errors with their line numbers.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from lxml import etree

from monitor.errors import InspectionError

__all__ = ["DEFAULT_MAX_BYTES", "parse_file", "validate"]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""Largest file read (QIF with measured point sets runs to tens of megabytes)."""

_local = threading.local()
_schemas: dict[tuple[str, float], Any] = {}
_schema_lock = threading.Lock()


def _parser() -> Any:
    """One hardened parser per thread (lxml parsers must not be shared across threads)."""
    p = getattr(_local, "parser", None)
    if p is None:
        p = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_pis=True,
            collect_ids=False,
        )
        _local.parser = p
    return p


def parse_file(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """The root element of the XML file at ``path``; :class:`InspectionError` naming the file and
    the reason for anything else (missing, too big, hostile, malformed)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InspectionError(path, f"{size} bytes is more than the {max_bytes} byte limit for one file")
        data = path.read_bytes()
    except OSError as exc:
        raise InspectionError(path, f"cannot read it: {exc.strerror or exc}") from exc
    if not data.strip():
        raise InspectionError(path, "the file is empty")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise InspectionError(path, "it declares a DTD or entities, which are refused (XML entity attacks)")
    try:
        root = etree.fromstring(data, _parser())
    except (etree.LxmlError, ValueError, LookupError, UnicodeError, MemoryError) as exc:
        raise InspectionError(path, f"malformed XML: {exc}") from exc
    if root is None:
        raise InspectionError(path, "no root element")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise InspectionError(path, "it declares a DTD, which is refused (XML entity attacks)")
    return root


def _schema(xsd: Path) -> Any:
    try:
        key = (str(xsd.resolve()), xsd.stat().st_mtime)
    except OSError as exc:
        raise InspectionError(xsd, f"cannot read the schema: {exc.strerror or exc}") from exc
    with _schema_lock:
        schema = _schemas.get(key)
        if schema is None:
            try:
                doc = etree.parse(str(xsd), etree.XMLParser(no_network=True, resolve_entities=False))
                schema = etree.XMLSchema(doc)
            except (etree.LxmlError, OSError) as exc:
                raise InspectionError(xsd, f"the schema does not compile: {exc}") from exc
            _schemas[key] = schema
        return schema


def validate(root: Any, path: Path, xsd: Path, *, max_errors: int = 5) -> None:
    """Validate the parsed file against the schema at ``xsd``; :class:`InspectionError` with the
    first ``max_errors`` problems, each with its line, when it is not valid."""
    schema = _schema(xsd)
    with _schema_lock:  # a compiled schema is not safe to use from two threads at once
        ok = schema.validate(root.getroottree())
        errors = list(schema.error_log)
    if ok:
        return
    lines = [f"line {e.line}: {e.message}" for e in errors[:max_errors]]
    more = f" (and {len(errors) - max_errors} more)" if len(errors) > max_errors else ""
    raise InspectionError(path, f"not valid against {xsd.name}: " + "; ".join(lines) + more)
