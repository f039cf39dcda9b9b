"""A site's care setting in triage: a flagged fracture is URGENT where the site's rules say
its setting reads fractures urgently (an emergency department) and ROUTINE elsewhere; the
setting is a site rule, not a constant. Bad site files are refused naming the file."""

from __future__ import annotations

import pytest

from medsight.errors import ConfigurationError
from medsight.findings.finding import Finding
from medsight.findings.triage import triage
from medsight.tasks.selection import load_rules

FRACTURE = {"value": "125605004", "scheme": "SCT", "meaning": "Fracture of bone"}


def _fracture(flag: bool = True) -> Finding:
    return Finding(
        name="fracture",
        code=FRACTURE,
        model={"id": "xray-fracture", "version": "0.1.0", "hash": "x"},
        probability=0.8 if flag else 0.1,
        flag=flag,
        operating_point={"name": "high_sensitivity", "threshold": 0.3},
    )


def _site(tmp_path, setting: str) -> tuple[str, tuple[str, ...]]:
    path = tmp_path / "site.toml"
    path.write_text(
        f'version = "er-1"\n[triage]\nsetting = "{setting}"\n'
        '[[triage.urgent]]\nfinding = "fracture"\nsettings = ["emergency"]\n'
    )
    site = load_rules(path)
    assert site.rules == []  # triage only: each task's acceptance routes
    return site.triage.setting, site.triage.urgent_findings()


def test_a_fracture_is_urgent_in_the_emergency_setting_only(tmp_path):
    setting, urgent = _site(tmp_path, "emergency")
    priority = triage([_fracture()], urgent_findings=urgent, setting=setting)
    assert priority.level == "URGENT"
    assert "urgent in this site's emergency setting" in priority.reasons[0]
    setting, urgent = _site(tmp_path, "outpatient")
    assert triage([_fracture()], urgent_findings=urgent, setting=setting).level == "ROUTINE"
    assert triage([_fracture()]).level == "ROUTINE"  # no site rules: the task's own levels


def test_an_unflagged_fracture_raises_nothing_and_review_still_wins(tmp_path):
    setting, urgent = _site(tmp_path, "emergency")
    assert triage([_fracture(flag=False)], urgent_findings=urgent).level == "NO_AI_FINDING"
    # a study needing review is still URGENT when a flagged fracture is in it (rule 2 first)
    both = triage([_fracture()], ["image: needs review"], urgent_findings=urgent, setting=setting)
    assert both.level == "URGENT" and any("needs review" in r for r in both.reasons)


def test_a_bad_triage_section_is_refused(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('version = "1"\n[[triage.urgent]]\nfinding = "fracture"\nsettings = []\n')
    with pytest.raises(ConfigurationError, match=r"bad\.toml"):
        load_rules(path)
    path.write_text('version = "1"\n[triage]\nsetting = "er"\nlevel = "STAT"\n')
    with pytest.raises(ConfigurationError, match="invalid routing rules"):
        load_rules(path)
