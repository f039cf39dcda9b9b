"""The medsight exception tree.

Every error medsight raises on purpose is a :class:`MedsightError`. Each one also inherits the
builtin a caller would naturally catch, so ``except ValueError`` keeps working::

    MedsightError(Exception)
    ├── InvalidInputError(ValueError)          bad input or usage            -> exit 2
    │   ├── UnreadableFileError(OSError)       missing, empty, unreadable, truncated file
    │   ├── DicomReadError                     a DICOM file or series that cannot be read
    │   │   ├── UnsupportedTransferSyntaxError(NotImplementedError)
    │   │   ├── NoPixelDataError               a DICOM object with no image in it
    │   │   └── GeometryError                  slices that do not form a trustworthy volume
    │   │       └── GantryTiltError            tilted acquisition, refused unless corrected
    │   ├── AmbiguousInputError                a path holds several series where one is needed
    │   ├── NoImageFoundError(FileNotFoundError)  a path with nothing medsight can read
    │   ├── TaskMismatchError                  the image is outside what the task can run on
    │   ├── NoMatchingTaskError                no task accepts the image (automatic selection)
    │   ├── EmptyMaskError                     a measurement asked of an empty mask
    │   └── MissingIdentifiersError            a source lacks the identifiers DICOM output needs
    ├── ConfigurationError                     configuration or model problem -> exit 3
    │   ├── MissingDependencyError(ImportError)  an optional extra is not installed
    │   ├── TaskDefinitionError                an invalid task.toml or task folder
    │   └── ModelLoadError                     missing or corrupted weights, unloadable model
    └── InternalError(RuntimeError)            a bug: the only error that may show a traceback

Messages say what was expected, what was found, and what to do about it; errors about a file
always name the file.
"""

from __future__ import annotations

from pathlib import Path


class MedsightError(Exception):
    """Base of every error medsight raises on purpose."""

    exit_code: int = 70

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.file = Path(path) if path is not None else None
        self.message = message
        super().__init__(f"{path}: {message}" if path is not None else message)


class InvalidInputError(MedsightError, ValueError):
    """The input or the request cannot be used as given (exit code 2)."""

    exit_code = 2


class UnreadableFileError(InvalidInputError, OSError):
    """A file is missing, empty, truncated or otherwise cannot be read."""


class DicomReadError(InvalidInputError):
    """A DICOM file or series cannot be turned into an image."""


class UnsupportedTransferSyntaxError(DicomReadError, NotImplementedError):
    """The pixel data is encoded in a transfer syntax no installed decoder handles."""


class NoPixelDataError(DicomReadError):
    """The DICOM object holds no image (a structured report, a presentation state...)."""


class GeometryError(DicomReadError):
    """Slices do not form a volume whose geometry can be trusted."""


class GantryTiltError(GeometryError):
    """The slices were acquired with a tilted gantry and correction was not requested."""


class AmbiguousInputError(InvalidInputError):
    """The path holds several series or images where exactly one was expected."""


class NoImageFoundError(InvalidInputError, FileNotFoundError):
    """The path exists but holds nothing medsight can read, or does not exist."""


class TaskMismatchError(InvalidInputError):
    """The image is outside what the task can run on (wrong modality, dimensionality...)."""


class NoMatchingTaskError(InvalidInputError):
    """No available task accepts the image; the message lists each task's reason."""


class EmptyMaskError(InvalidInputError):
    """A measurement was asked of a mask with no voxels in it."""


class MissingIdentifiersError(InvalidInputError):
    """The source lacks the identifiers (UIDs, DICOM header) a DICOM output must reference."""


class InsufficientEvidenceError(MedsightError):
    """The data cannot demonstrate what was asked (e.g. a target sensitivity); nothing is
    written (exit code 1, as a failed evaluation)."""

    exit_code = 1


class ConfigurationError(MedsightError):
    """Configuration, settings, task or model files are invalid (exit code 3)."""

    exit_code = 3


class MissingDependencyError(ConfigurationError, ImportError):
    """An optional package is needed; the message names the extra to install."""


class TaskDefinitionError(ConfigurationError):
    """A task folder or its task.toml is invalid."""


class ModelLoadError(ConfigurationError):
    """Weights are missing, do not match their SHA-256, or do not fit the network."""


class InternalError(MedsightError, RuntimeError):
    """A bug in medsight (exit code 70)."""

    exit_code = 70
