"""The worklist page: filters, sortable columns and rows drawn by ``static/worklist.js``
from /api/worklist every 5 seconds."""

from __future__ import annotations

import json
from typing import Any

from medsight.service.auth import User
from medsight.service.frame import COLOURS, page

__all__ = ["add_worklist_page"]

_WORKLIST_COLUMNS = (  # (sort key or "", heading)
    ("priority", "priority"),
    ("patient_name", "patient"),
    ("patient_id", "patient ID"),
    ("", "age / sex"),
    ("accession_number", "accession"),
    ("study_date", "study date"),
    ("modality", "modality"),
    ("body_part", "body part"),
    ("study_description", "description"),
    ("", "series / images"),
    ("waiting", "waiting"),
    ("", "reasons"),
    ("", "model"),
)


def _worklist_body() -> str:
    headings = "".join(
        f'<th><a href="#" data-sort="{key}">{name}</a></th>' if key else f"<th>{name}</th>"
        for key, name in _WORKLIST_COLUMNS
    )
    levels = "".join(f'<option value="{level}">{level}</option>' for level in COLOURS)
    return f"""<h1>Worklist</h1><p>Most urgent first, then longest waiting; click a heading to
sort. <span id="updated"></span></p>
<form id="filters" class="filters">
<input name="q" placeholder="patient, ID, accession, description" maxlength="64" size="32">
<input name="modality" placeholder="modality" maxlength="16" size="8">
<select name="priority"><option value="">any priority</option>{levels}</select>
<label>from <input name="date_from" placeholder="YYYYMMDD" size="9"></label>
<label>to <input name="date_to" placeholder="YYYYMMDD" size="9"></label>
<button>filter</button> <span id="error" role="alert"></span></form>
<table id="worklist" data-colours='{json.dumps(COLOURS)}'><thead><tr>{headings}</tr></thead>
<tbody id="rows"><tr><td colspan="{len(_WORKLIST_COLUMNS)}">loading...</td></tr></tbody>
</table><p id="total"></p>"""


def add_worklist_page(app: Any, *, reader: Any) -> None:
    from fastapi.responses import HTMLResponse

    @app.get("/", response_class=HTMLResponse)
    def worklist_page(user: User = reader) -> str:
        return page(
            "worklist", _worklist_body(), user=user, scripts=["/static/worklist/worklist.js"]
        )
