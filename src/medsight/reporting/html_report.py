"""One-page HTML report of a study, rendered from its result.json alone (so
``medsight report`` can render it again): priority and reasons, key images with overlays,
findings, measurements, input checks, the intended use, and a research-use banner.

Patient identifiers appear only when result.json carries them (``--include-identifiers``);
otherwise the study is named by its pseudonymous key.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from medsight.findings.measurements import spoken_measurement, spoken_number, spoken_unit

__all__ = ["BANNER", "render_html_report", "study_finding_html", "write_html_report"]

BANNER = "Research use only, not for diagnostic use."
_COLOURS = {
    "STAT": "#b00020",
    "URGENT": "#e65100",
    "NEEDS_REVIEW": "#6a1b9a",
    "ROUTINE": "#1565c0",
    "NO_AI_FINDING": "#455a64",
}
_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#111;background:#fafafa}
.banner{background:#b00020;color:#fff;padding:.6em 1em;font-weight:700;position:sticky;top:0}
.withdrawn{background:#000;color:#fff;padding:.6em 1em;font-weight:700}
main{padding:1em 1.5em;max-width:1100px}
.priority{color:#fff;display:inline-block;padding:.3em .8em;border-radius:4px;font-weight:700}
table{border-collapse:collapse;margin:.5em 0 1em}
td,th{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.8em 1em;margin:1em 0}
img.key{max-width:480px;max-height:480px;border:1px solid #999}
.sides{display:grid;grid-template-columns:1fr 1fr;gap:0 1em}
.sides>section img.key{max-width:100%}
.muted{color:#555;font-size:.9em}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _findings_table(findings: list[dict[str, Any]]) -> str:
    if not findings:
        return "<p>No findings reported by this task.</p>"
    classified = [f for f in findings if f.get("flag") is not None]
    segmented = [f for f in findings if f.get("flag") is None]
    return _classified_table(classified) + _segmented_table(segmented)


def _classified_table(findings: list[dict[str, Any]]) -> str:
    """Classifier outputs: the calibrated probability and the flag at the locked point."""
    if not findings:
        return ""
    rows = []
    for finding in findings:
        probability = finding.get("probability")
        point = finding.get("operating_point") or {}
        if finding["flag"]:
            flag = f"<strong>FLAGGED</strong> at {_e(point.get('name', ''))}"
        else:
            flag = f"not flagged at {_e(point.get('name', ''))} (not a negative read)"
        rows.append(
            f"<tr><td>{_finding_name(finding)}</td>"
            f"<td>{'' if probability is None else f'{probability:.3f}'}</td><td>{flag}</td>"
            f"<td class=muted>{_e(finding.get('evidence', ''))}</td></tr>"
        )
    return (
        "<table><tr><th>finding</th><th>calibrated probability</th><th>flag</th>"
        f"<th>evidence</th></tr>{''.join(rows)}</table>"
    )


def _segmented_table(findings: list[dict[str, Any]]) -> str:
    """Segmentation outputs: what was segmented and how large, never a probability."""
    if not findings:
        return ""
    rows = []
    for finding in findings:
        sizes = [m for m in finding.get("measurements", []) if m["name"] in ("volume", "area")]
        size = (
            f"{_e(sizes[0]['name'])} {_e(spoken_measurement(sizes[0]['value'], sizes[0]['unit']))}"
            if sizes
            else "nothing segmented"
        )
        rows.append(
            f"<tr><td>{_finding_name(finding)}</td><td>{size}</td>"
            f"<td class=muted>{_e(finding.get('evidence', ''))}</td></tr>"
        )
    return (
        "<table><tr><th>structure</th><th>segmented</th><th>evidence</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _finding_name(finding: dict[str, Any]) -> str:
    return (
        f"{_e(finding['code'].get('meaning', finding['name']))}"
        f"<br><span class=muted>{_e(finding['code'].get('scheme'))} "
        f"{_e(finding['code'].get('value'))}</span>"
    )


def _measurements_table(findings: list[dict[str, Any]]) -> str:
    rows = [
        f"<tr><td>{_e(m['structure'] or f['name'])}</td><td>{_e(m['name'])}</td>"
        f"<td>{spoken_number(m['value'])}</td><td>{_e(spoken_unit(m['unit']))}</td>"
        f"<td class=muted>{_e(m['method'])}</td>"
        "</tr>"
        for f in findings
        for m in f.get("measurements", [])
    ]
    if not rows:
        return ""
    return (
        "<h3>Measurements</h3><table><tr><th>structure</th><th>measurement</th><th>value</th>"
        f"<th>unit</th><th>method</th></tr>{''.join(rows)}</table>"
    )


def gate_html(analysis: dict[str, Any]) -> str:
    """The input gate as a clinician reads it: a withheld answer said first, then every check
    that did not pass with its score and threshold (the report and the viewer show this)."""
    gate = analysis.get("gate")
    if not gate:
        return ""
    lead = (
        "<p><strong>AI answer withheld</strong>: the input gate found this image outside what "
        "the model may judge. No finding is shown; the image needs a full read.</p>"
        if analysis.get("withheld")
        else ""
    )

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.3g}"

    rows = "".join(
        f"<tr><td>{_e(c['name'])}</td><td>{_e(c['outcome'])}</td>"
        f"<td>{number(c.get('score'))}</td><td>{number(c.get('threshold'))}</td>"
        f"<td>{_e(c['reason'])}</td></tr>"
        for c in gate.get("checks", [])
        if c["outcome"] != "pass"
    )
    table = (
        "<table><tr><th>check</th><th>outcome</th><th>score</th><th>threshold</th>"
        f"<th>reason</th></tr>{rows}</table>"
        if rows
        else ""
    )
    notes = "".join(f"<p class=muted>{_e(n)}</p>" for n in gate.get("notes", []))
    passed = sum(c["outcome"] == "pass" for c in gate.get("checks", []))
    return (
        f'<div class="gate"><h3>Input gate: {_e(gate["decision"])}</h3>{lead}{table}'
        f"<p class=muted>{passed} of {len(gate.get('checks', []))} checks passed.</p>"
        f"{notes}</div>"
    )


def _analysis_section(analysis: dict[str, Any]) -> str:
    task = analysis["task"]
    source = analysis["input"]
    images = "".join(
        f'<img class=key alt="key image with AI overlay" src="{_e(path)}">'
        for path in analysis.get("overlays", [])
    )
    review = ""
    if analysis.get("review_reasons"):
        items = "".join(f"<li>{_e(r)}</li>" for r in analysis["review_reasons"])
        review = f"<h3>Needs review</h3><ul>{items}</ul>"
    files = analysis.get("dicom_outputs", []) + analysis.get("output_notes", [])
    outputs = "".join(f"<li>{_e(f)}</li>" for f in files)
    return f"""<section>
<h2>{_e(task["id"])} {_e(task["version"])} on {_e(source.get("modality") or source["kind"])}
image {_e("x".join(str(s) for s in source["shape"]))}</h2>
<p>State: <strong>{_e(analysis["state"])}</strong>. {review}</p>
{gate_html(analysis)}
{images}
<h3>Findings</h3>{_findings_table(analysis.get("findings", []))}
{_measurements_table(analysis.get("findings", []))}
<p class=muted>Intended use: {_e(task.get("intended_use", ""))}</p>
<p class=muted>Model: {_e(task["id"])} {_e(task["version"])}, task hash
<code>{_e(task["hash"])}</code>.{f" Outputs: <ul>{outputs}</ul>" if outputs else ""}</p>
</section>"""


_EYES = {"R": "right eye", "L": "left eye"}


def _patient_table(finding: dict[str, Any]) -> str:
    """The worse-eye result: each output's probability and each grade per eye and for the
    patient, with the flags at the task's points."""
    sides = [s for s in ("R", "L") if s in finding.get("sides", {})]
    head = "".join(f"<th>{_EYES[s]}</th>" for s in sides)
    rows = []
    for output, patient in finding.get("probabilities", {}).items():
        cells = "".join(
            f"<td>{finding['sides'][s]['probabilities'][output]['value']:.3f}</td>"
            if "probabilities" in finding["sides"][s]
            else "<td>ungradable</td>"
            for s in sides
        )
        flags = [
            f"{'FLAG at' if f['flag'] else 'below'} {name} (threshold {f['threshold']:.3f})"
            for name, f in finding.get("flags", {}).items()
            if f["output"] == output
        ]
        rows.append(
            f"<tr><td>{_e(output)}</td>{cells}<td><b>{patient['value']:.3f}</b> "
            f"({_EYES.get(patient['side'], patient['side'])}) {_e('; '.join(flags))}</td></tr>"
        )
    for name, grade in finding.get("grades", {}).items():
        cells = "".join(
            f"<td>{finding['sides'][s]['grades'][name]['grade']}</td>"
            if "grades" in finding["sides"][s]
            else "<td>ungradable</td>"
            for s in sides
        )
        rows.append(
            f"<tr><td>{_e(name)}</td>{cells}<td><b>{grade['grade']}</b> "
            f"({_e(grade['level'])}, {_EYES.get(grade['side'], grade['side'])})</td></tr>"
        )
    if not rows:
        return ""
    return f"<table><tr><th></th>{head}<th>patient (worse eye)</th></tr>{''.join(rows)}</table>"


def study_finding_html(finding: dict[str, Any], analyses: list[dict[str, Any]]) -> str:
    """A result derived from several analyses (a cine's ventricular function, a patient's
    worse-eye result): which analyses it used, its measurements or per-eye table, and
    everything it could not give, with the reason."""
    phases = "".join(
        f"<li>{_e(name)}: {_e(entry.get('description', ''))}"
        f"{' (' + _e(entry['chosen']) + ')' if entry.get('chosen') else ''}</li>"
        for name, entry in finding.get("phases", {}).items()
    )
    missing = "".join(f"<li>{_e(reason)}</li>" for reason in finding.get("not_given", []))
    model = finding.get("model", {})
    measured = "" if "sides" in finding else _measurements_table([{**finding}])
    return (
        f"<section><h2>{_e(finding.get('code', {}).get('meaning', finding['name']))}</h2>"
        f"<p class=muted>derived from {len(finding['derived_from'])} of {len(analyses)} "
        f"analyses by {_e(model.get('id', ''))} {_e(model.get('version', ''))}; "
        f"{_e(finding.get('method', ''))}</p>"
        f"{f'<ul>{phases}</ul>' if phases else ''}"
        f"{_patient_table(finding)}"
        f"{measured}"
        f"{f'<h3>Not given</h3><ul>{missing}</ul>' if missing else ''}</section>"
    )


def _notes_section(notes: list[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{_e(note)}</li>" for note in notes)
    return f"<section><h2>Files set aside</h2><ul>{items}</ul></section>"


def render_html_report(document: dict[str, Any]) -> str:
    priority = document["priority"]
    level = priority["level"]
    reasons = "".join(f"<li>{_e(r)}</li>" for r in priority["reasons"])
    identifiers = document.get("identifiers")
    who = (
        f"Patient {_e(identifiers.get('patient_name') or '')} "
        f"(ID {_e(identifiers.get('patient_id') or '')}), accession "
        f"{_e(identifiers.get('accession_number') or '')}"
        if identifiers
        else f"Study key {_e(document['study_key'])} (pseudonymous; no patient identifiers)"
    )
    withdrawn = ""
    if document.get("status") == "withdrawn":
        withdrawn = (
            '<div class="withdrawn">WITHDRAWN: this result must not be used. Reason: '
            f"{_e(document.get('withdrawn_reason', ''))}</div>"
        )
    failures = "".join(
        f"<li>{_e(f['what'])}: {_e(f['reason'])}</li>" for f in document.get("failures", [])
    )
    supersedes = (
        f" It supersedes result {_e(document['supersedes'])}." if document.get("supersedes") else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>medsight report {_e(document["study_key"])}</title><style>{_STYLE}</style></head>
<body><div class="banner" role="alert">medsight AI decision support - {BANNER}
No AI finding is not a negative read.</div>{withdrawn}
<main>
<h1>AI results for one study</h1>
<p>{who}. Result {_e(document.get("result_id", ""))} ({_e(document.get("status", "final"))}),
created {_e(document["created"])} by medsight {_e(document["medsight_version"])}.{supersedes}</p>
<section><h2>Priority: <span class="priority" style="background:{_COLOURS.get(level, "#333")}">
{_e(level)}</span> <span class=muted>score {priority["score"]:.2f}, rules v{
        _e(priority["rules_version"])
    }</span></h2><ul>{reasons}</ul></section>
{"".join(study_finding_html(f, document["analyses"]) for f in document.get("study_findings", []))}
{_analysis_sections(document)}
{f"<section><h2>Not analysed</h2><ul>{failures}</ul></section>" if failures else ""}
{_notes_section(document.get("input_notes", []))}
<p class=muted>{BANNER} Every finding is decision support for a clinician, who makes the
diagnosis. Probabilities are calibrated on internal validation data; see each task's model
card.</p>
</main></body></html>
"""


def _analysis_sections(document: dict[str, Any]) -> str:
    """Each analysis; a study with a worse-eye result shows the eyes side by side (right
    eye on the left, as the clinician faces the patient)."""
    analyses = document["analyses"]
    eyes = [f for f in document.get("study_findings", []) if "sides" in f]
    if not eyes:
        return "".join(_analysis_section(a) for a in analyses)
    columns = []
    for side in ("R", "L"):
        members = [analyses[i] for f in eyes for i in f["sides"].get(side, {}).get("analyses", [])]
        columns.append(
            f"<div><h2>{_EYES[side]}</h2>"
            + ("".join(_analysis_section(a) for a in members) or "<p>no image</p>")
            + "</div>"
        )
    placed = {i for f in eyes for s in f["sides"].values() for i in s["analyses"]}
    rest = "".join(_analysis_section(a) for i, a in enumerate(analyses) if i not in placed)
    return f'<div class="sides">{"".join(columns)}</div>{rest}'


def write_html_report(document: dict[str, Any], study_dir: Path) -> Path:
    path = study_dir / "report.html"
    path.write_text(render_html_report(document))
    return path
