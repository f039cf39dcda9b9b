"""medsight: AI decision support for medical images. Research use only, not for diagnostic use.

The public API is re-exported here; everything else lives in its stage's package (see
DESIGN.md: io -> imaging -> inference -> findings -> reporting -> service).
"""

from medsight.errors import (
    AmbiguousInputError,
    ConfigurationError,
    DicomReadError,
    EmptyMaskError,
    GantryTiltError,
    GeometryError,
    InternalError,
    InvalidInputError,
    MedsightError,
    MissingDependencyError,
    MissingIdentifiersError,
    ModelLoadError,
    NoImageFoundError,
    NoMatchingTaskError,
    NoPixelDataError,
    TaskDefinitionError,
    TaskMismatchError,
    UnreadableFileError,
    UnsupportedTransferSyntaxError,
)
from medsight.image import FrameReference, Identifiers, Image
from medsight.inference import Prediction, Predictor
from medsight.io import read_image, read_nifti, read_raster, write_nifti
from medsight.io.dicom import read_dicom, scan_dicom
from medsight.tasks import Task, discover_tasks, load_task

__version__ = "0.1.0"

__all__ = [
    "AmbiguousInputError",
    "ConfigurationError",
    "DicomReadError",
    "EmptyMaskError",
    "FrameReference",
    "GantryTiltError",
    "GeometryError",
    "Identifiers",
    "Image",
    "InternalError",
    "InvalidInputError",
    "MedsightError",
    "MissingDependencyError",
    "MissingIdentifiersError",
    "ModelLoadError",
    "NoImageFoundError",
    "NoMatchingTaskError",
    "NoPixelDataError",
    "Prediction",
    "Predictor",
    "Task",
    "TaskDefinitionError",
    "TaskMismatchError",
    "UnreadableFileError",
    "UnsupportedTransferSyntaxError",
    "__version__",
    "discover_tasks",
    "load_task",
    "read_dicom",
    "read_image",
    "read_nifti",
    "read_raster",
    "scan_dicom",
    "write_nifti",
]
