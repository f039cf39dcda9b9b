"""`result.json`: one study's analyses, in a versioned, published JSON Schema.

The schema is defined here once; ``docs/result.schema.json`` is generated from it (a test keeps
the two equal). Patient names and IDs appear in result.json only when asked for
(``identifiers``, from ``--include-identifiers``); study keys are pseudonymous (a hash of the
StudyInstanceUID or of the input file). DICOM outputs carry the source's identifiers, as the
standard requires.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RESULT_SCHEMA_VERSION", "result_schema", "validate_result"]

# 2.0: findings, measurements, priority, versioning; 3.0: the input gate per analysis (it
# replaces "acceptance"), withheld answers, input.path, study_findings, triage rules 2
RESULT_SCHEMA_VERSION = "3.0"

_NUMBER_MAP = {"type": "object", "additionalProperties": {"type": "number"}}
_STRINGS = {"type": "array", "items": {"type": "string"}}

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_GATE_CHECK = {
    "type": "object",
    "required": ["name", "stage", "outcome", "reason", "score", "threshold"],
    "properties": {
        "name": {"type": "string"},
        "stage": {"enum": ["tags", "pixels", "photo", "ood"]},
        "outcome": {"enum": ["pass", "review", "withhold"]},
        "score": _NUMBER_OR_NULL,
        "threshold": _NUMBER_OR_NULL,
        "direction": {"enum": ["above", "below", None]},
        "reason": {"type": "string"},
    },
}
_GATE = {
    "type": "object",
    "description": "may this task's model judge this image: every check, and the decision "
    "(withhold: NEEDS_REVIEW, no finding; the raw output is kept for audit only)",
    "required": ["version", "decision", "ood_fitted", "checks"],
    "properties": {
        "version": {"type": "string"},
        "decision": {"enum": ["pass", "review", "withhold"]},
        "ood_fitted": {"type": "boolean"},
        "notes": _STRINGS,
        "checks": {"type": "array", "items": _GATE_CHECK},
        "statistics": _NUMBER_MAP,
    },
}
_MEASUREMENT = {
    "type": "object",
    "required": ["name", "value", "unit", "method"],
    "properties": {
        "name": {"type": "string"},
        "value": {"type": "number"},
        "unit": {"type": "string", "description": "UCUM; {px}/{px2} when spacing is unknown"},
        "method": {"type": "string"},
        "structure": {"type": "string"},
    },
}

_STUDY_FINDING = {
    "type": "object",
    "description": "a result derived from several analyses (e.g. a patient-level DR grade, "
    "an ejection fraction from two phases)",
    "required": ["name", "derived_from"],
    "properties": {
        "name": {"type": "string"},
        "derived_from": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0},
            "description": "indices into analyses[]",
        },
        "model": {"type": "object"},
        "phases": {
            "type": "object",
            "description": "cardiac_function: which analysis is end-diastole (ED) and which "
            "end-systole (ES), and how they were chosen",
        },
        "measurements": {"type": "array", "items": _MEASUREMENT},
        "slice_areas": {"type": "object", "description": "per phase, per structure, per slice"},
        "not_given": {
            **_STRINGS,
            "description": "what could not be derived, each with its reason (never silent)",
        },
        "method": {"type": "string"},
        "sides": {
            "type": "object",
            "description": "worse-side results: per side (R, L) its analyses, the gradable "
            "ones, and its worst gradable image's probabilities and grades",
        },
        "probabilities": {
            "type": "object",
            "description": "worse-side results: per output the patient's probability, the "
            "side and the analysis it comes from",
        },
        "flags": {
            "type": "object",
            "description": "worse-side results: per operating point the patient's flag",
        },
        "grades": {
            "type": "object",
            "description": "worse-side results: per ordinal grade the patient's (worse eye)",
        },
        "body_surface_area_m2": {"type": "number"},
        "dicom_outputs": _STRINGS,
        "output_notes": _STRINGS,
    },
}

_FINDING = {
    "type": "object",
    "required": ["name", "code", "model", "probability", "flag", "measurements"],
    "properties": {
        "name": {"type": "string"},
        "code": {"type": "object"},
        "model": {
            "type": "object",
            "required": ["id", "version", "hash"],
            "properties": {
                "id": {"type": "string"},
                "version": {"type": "string"},
                "hash": {"type": "string"},
            },
        },
        "probability": {"type": ["number", "null"]},
        "flag": {"type": ["boolean", "null"]},
        "operating_point": {"type": ["object", "null"]},
        "critical": {"type": "boolean"},
        "location": {"type": ["object", "null"]},
        "segment_index": {"type": ["integer", "null"]},
        "measurements": {"type": "array", "items": _MEASUREMENT},
        "evidence": {"type": "string"},
    },
}

_PRIORITY = {
    "type": "object",
    "required": ["level", "score", "reasons", "rules_version"],
    "properties": {
        "level": {"enum": ["STAT", "URGENT", "NEEDS_REVIEW", "ROUTINE", "NO_AI_FINDING"]},
        "score": {"type": "number"},
        "reasons": _STRINGS,
        "rules_version": {"type": "string"},
    },
}

_ANALYSIS = {
    "type": "object",
    "required": ["input", "task", "state", "withheld", "gate", "timings_s"],
    "properties": {
        "input": {
            "type": "object",
            "required": ["kind", "shape", "spacing_mm", "affine_lps"],
            "properties": {
                "kind": {"enum": ["dicom", "nifti", "raster", "wsi"]},
                "device": {
                    "type": ["string", "null"],
                    "description": "keyed hash of Manufacturer, ManufacturerModelName and "
                    "StationName (monitoring groups by it; the names are never written)",
                },
                "path": {
                    "type": ["string", "null"],
                    "description": "relative to the path given; file names may identify a patient",
                },
                "file_sha256": {"type": ["string", "null"]},
                "study_instance_uid": {"type": ["string", "null"]},
                "series_instance_uid": {"type": ["string", "null"]},
                "sop_instance_uids": _STRINGS,
                "frame_of_reference_uid": {"type": ["string", "null"]},
                "modality": {"type": ["string", "null"]},
                "shape": {"type": "array", "items": {"type": "integer"}},
                "spacing_mm": {"type": "array", "items": {"type": "number"}},
                "spacing_known": {"type": "boolean"},
                "affine_lps": {
                    "type": "array",
                    "items": {"type": "array", "items": {"type": "number"}},
                },
                "warnings": _STRINGS,
                "laterality": {
                    "enum": ["R", "L"],
                    "description": "from a manifest row: the side the image shows",
                },
                "phase": {
                    "type": "string",
                    "description": "from a manifest row: e.g. ED/ES of a cine, a screening field",
                },
            },
        },
        "task": {
            "type": "object",
            "required": ["id", "version", "hash", "weights_sha256", "backend", "selection"],
            "properties": {
                "id": {"type": "string"},
                "version": {"type": "string"},
                "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "weights_sha256": {"type": "object", "additionalProperties": {"type": "string"}},
                "backend": {"type": "string"},
                "selection": {
                    "type": "object",
                    "properties": {"mode": {"enum": ["auto", "named"]}, "reasons": _STRINGS},
                },
                "intended_use": {"type": "string"},
            },
        },
        "state": {"enum": ["OK", "NEEDS_REVIEW"]},
        "review_reasons": _STRINGS,
        "withheld": {"type": "boolean"},
        "gate": _GATE,
        "classification": {
            "type": "object",
            "required": ["logits", "probabilities", "temperature", "operating_points"],
            "properties": {
                "logits": _NUMBER_MAP,
                "probabilities": _NUMBER_MAP,
                "temperature": {"type": "number"},
                "temperatures": {
                    **_NUMBER_MAP,
                    "description": "per output, where a sigmoid task calibrates each apart",
                },
                "grades": {
                    "type": "object",
                    "description": "ordinal grades read from cumulative outputs",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["grade", "level", "probabilities"],
                        "properties": {
                            "grade": {"type": "integer", "minimum": 0},
                            "level": {"type": "string"},
                            "probabilities": _NUMBER_MAP,
                            "at_least": _NUMBER_MAP,
                            "method": {"type": "string"},
                        },
                    },
                },
                "heatmap": {
                    "type": "string",
                    "description": "Grad-CAM heatmap (0-1) on the input's grid, relative path",
                },
                "heatmap_note": {
                    "type": "string",
                    "description": "why no heatmap was computed (no output that uses it asked)",
                },
                "operating_points": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["output", "threshold", "probability", "flag"],
                        "properties": {
                            "output": {"type": "string"},
                            "threshold": {"type": "number"},
                            "probability": {"type": "number"},
                            "flag": {"type": "boolean"},
                            "sensitivity": {"type": ["number", "null"]},
                            "specificity": {"type": ["number", "null"]},
                        },
                    },
                },
            },
        },
        "segmentation": {
            "type": "object",
            "required": ["label_map", "segments"],
            "properties": {
                "label_map": {"type": "string"},
                "instance_map": {
                    "type": "string",
                    "description": "a task that counts objects (nuclei): 16-bit PNG, 0 "
                    "background, one id per object (32-bit TIFF beyond 65,535 objects)",
                },
                "instances": {"type": "integer", "description": "objects in instance_map"},
                "origin_px": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "description": "a slide's region of interest: the level-0 pixel of the "
                    "maps' first pixel (they cover the region's bounding box)",
                },
                "probability_maps": {
                    "type": "object",
                    "description": "per segment: float32 NIfTI (and, for a 2D source, an "
                    "8-bit PNG) of its probability on the input's grid, relative paths",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["nifti"],
                        "properties": {"nifti": {"type": "string"}, "png": {"type": "string"}},
                    },
                },
                "segments": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "index", "code", "voxels"],
                        "properties": {
                            "name": {"type": "string"},
                            "index": {"type": "integer"},
                            "code": {"type": "object"},
                            "voxels": {"type": "integer"},
                        },
                    },
                },
            },
        },
        "detection": {
            "type": "object",
            "description": "a detection task's boxes (all the network kept; findings are "
            "those scoring at least finding_score)",
            "required": ["boxes"],
            "properties": {
                "audit_only": {"type": "boolean"},
                "finding_score": {"type": "number"},
                "body_part": {"type": ["string", "null"]},
                "view": {"type": ["string", "null"]},
                "boxes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["label", "score", "pixel_box", "lps_box"],
                        "properties": {
                            "label": {"type": "string"},
                            "score": {"type": "number", "minimum": 0, "maximum": 1},
                            "pixel_box": {
                                "description": "[x0, y0, x1, y1]: source pixel edges "
                                "(columns, rows; the first pixel spans 0-1)",
                                "type": "array",
                                "items": {"type": "number"},
                                "minItems": 4,
                                "maxItems": 4,
                            },
                            "lps_box": {
                                "description": "the two corners in patient mm (LPS): "
                                "[x0, y0, z0, x1, y1, z1]",
                                "type": "array",
                                "items": {"type": "number"},
                                "minItems": 6,
                                "maxItems": 6,
                            },
                        },
                    },
                },
            },
        },
        "slide": {
            "type": "object",
            "description": "a whole slide analysed for nuclei: tissue tiles at the model's "
            "resolution, each nucleus counted once (docs/pathology.md)",
            "required": ["level", "tiles_total", "tiles_analysed", "nuclei", "geojson"],
            "properties": {
                "level": {"type": "integer"},
                "mpp": {"type": ["number", "null"]},
                "model_mpp": {"type": "number"},
                "tile_px": {"type": "integer"},
                "margin_px": {"type": "integer"},
                "tiles_total": {"type": "integer"},
                "tiles_with_tissue": {"type": "integer"},
                "tiles_analysed": {"type": "integer"},
                "tiles_gated": {
                    "type": "integer",
                    "description": "tissue tiles the task's tile gate judged (at most 8), each "
                    "on a 512-pixel window of all tissue",
                },
                "tiles_withheld_by_gate": {"type": "integer"},
                "nuclei": {"type": "integer"},
                "nuclei_left_out": {
                    "type": "integer",
                    "description": "nuclei found under pen marks or in folds: not counted, "
                    "as their tissue is not in the tissue area",
                },
                "geojson": {
                    "type": "string",
                    "description": "nucleus outlines, QuPath GeoJSON (level-0 pixels)",
                },
                "density_map": {"type": "string"},
                "density_cell_px": {
                    "type": "integer",
                    "description": "a density map cell's side in level-0 pixels",
                },
                "density_cell_um": {"type": ["number", "null"]},
                "density_max": {"type": ["number", "null"]},
                "roi": {"type": ["string", "null"]},
                "quality_regions": {
                    "type": "array",
                    "description": "artefacts found: pen marks (taken out of the tissue), folds "
                    "(taken out and flagged for review) and out-of-focus tiles (flagged "
                    "for review), level-0 pixel boxes",
                    "items": {"type": "object"},
                },
                "notes": _STRINGS,
            },
        },
        "overlays": _STRINGS,
        "findings": {"type": "array", "items": _FINDING},
        "dicom_outputs": _STRINGS,
        "output_notes": _STRINGS,
        "details": {"type": "object"},
        "timings_s": _NUMBER_MAP,
    },
}

_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "medsight result.json",
    "description": "One study analysed by medsight. Research use only, not for diagnostic use.",
    "type": "object",
    "required": [
        "schema_version",
        "medsight_version",
        "disclaimer",
        "created",
        "study_key",
        "result_id",
        "status",
        "priority",
        "analyses",
        "failures",
    ],
    "properties": {
        "schema_version": {"const": RESULT_SCHEMA_VERSION},
        "medsight_version": {"type": "string"},
        "disclaimer": {"const": "research use only, not for diagnostic use"},
        "created": {"type": "string"},
        "study_key": {"type": "string"},
        "result_id": {"type": "string"},
        "status": {"enum": ["final", "withdrawn"]},
        "withdrawn_reason": {"type": "string"},
        "supersedes": {"type": ["string", "null"]},
        "priority": _PRIORITY,
        "identifiers": {
            "type": "object",
            "description": "present only when asked for (--include-identifiers)",
        },
        "analyses": {"type": "array", "items": _ANALYSIS},
        "study_findings": {"type": "array", "items": _STUDY_FINDING},
        "input_notes": {
            **_STRINGS,
            "description": "files of the input set aside, each with why (e.g. a label map "
            "next to its image)",
        },
        "failures": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["what", "reason", "exit_code"],
                "properties": {
                    "what": {"type": "string"},
                    "reason": {"type": "string"},
                    "exit_code": {"type": "integer"},
                },
            },
        },
    },
}


def result_schema() -> dict[str, Any]:
    """The JSON Schema of result.json (a copy)."""
    import copy

    return copy.deepcopy(_SCHEMA)


def validate_result(document: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` when ``document`` does not follow the schema."""
    import jsonschema

    jsonschema.validate(document, _SCHEMA)
