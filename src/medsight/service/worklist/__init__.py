"""The worklist: indexed rows written when a result is stored (``rows``) and its page
(``page``, with ``static/worklist.js``)."""

from medsight.service.worklist.rows import (
    IDENTIFIER_COLUMNS,
    SORT_KEYS,
    Worklist,
    WorklistPage,
    WorklistQuery,
    identifiers_from_store,
    study_identifiers,
)

__all__ = [
    "IDENTIFIER_COLUMNS",
    "SORT_KEYS",
    "Worklist",
    "WorklistPage",
    "WorklistQuery",
    "identifiers_from_store",
    "study_identifiers",
]
