"""One study from input to written results (result.json, masks, overlays, provenance).

The CLI (``medsight analyze``, ``analyze-archive``) and the service call this; none holds
the logic.
"""

from medsight.analysis.batch import analyze_studies
from medsight.analysis.inputs import ImageSource, StudyInput, find_studies, studies_of
from medsight.analysis.runner import AnalysisOptions, StudyOutcome, TaskSource, analyze_study

__all__ = [
    "AnalysisOptions",
    "ImageSource",
    "StudyInput",
    "StudyOutcome",
    "TaskSource",
    "analyze_studies",
    "analyze_study",
    "find_studies",
    "studies_of",
]
