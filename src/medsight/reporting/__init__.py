"""Results people and systems read: result.json, overlays, provenance log."""

from medsight.reporting.json_report import RESULT_SCHEMA_VERSION, result_schema, validate_result
from medsight.reporting.overlays import overlay_png
from medsight.reporting.provenance import append_provenance

__all__ = [
    "RESULT_SCHEMA_VERSION",
    "append_provenance",
    "overlay_png",
    "result_schema",
    "validate_result",
]
