"""Inspection results from CMMs and gauges (QIF 3, CSV), joined to part records.

Modules: :mod:`~monitor.inspection.model` (the data), :mod:`~monitor.inspection.units`,
:mod:`~monitor.inspection.qif` and :mod:`~monitor.inspection.csvimport` (reading files),
:mod:`~monitor.inspection.matching` (which part results belong to),
:mod:`~monitor.inspection.importer` (``monitor import`` and the watched folders),
:mod:`~monitor.inspection.views` (rows with the feature each characteristic measures) and
:mod:`~monitor.inspection.config` (settings in the site and program files).

This package module imports nothing, so the store and the configuration can use the model and
settings modules without loading the importer (which uses them in turn).
"""

__all__: list[str] = []
