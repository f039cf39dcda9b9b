"""The medsight service (issue in progress): durable intake of studies from a PACS. Built so
far: the instance store (files + SQLite in WAL mode) and the DICOM listener."""

from medsight.service.store import InstanceStore, StoredInstance

__all__ = ["InstanceStore", "StoredInstance"]
