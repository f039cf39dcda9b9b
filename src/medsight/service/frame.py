"""The frame every page shares: the research-use banner, navigation by role, the priority
colours and the style sheet. A leaf module: pages and feature folders import it."""

from __future__ import annotations

import html

from medsight.service.auth import User

__all__ = ["BANNER", "COLOURS", "page"]

BANNER = (
    "Research use only, not for diagnostic use. No AI finding is not a negative read: "
    "every study still needs a full read by a clinician."
)
COLOURS = {
    "STAT": "#b00020",
    "URGENT": "#e65100",
    "NEEDS_REVIEW": "#6a1b9a",
    "ROUTINE": "#1565c0",
    "NO_AI_FINDING": "#455a64",
}
_STYLE = """body{font-family:system-ui,sans-serif;margin:0}
.banner{background:#b00020;color:#fff;padding:.6em 1em;font-weight:700}
nav{padding:.4em 1em;background:#eee} nav a{margin-right:1em}
main{padding:1em} table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.35em .6em;text-align:left;vertical-align:top}
.level{color:#fff;padding:.15em .5em;border-radius:3px;font-weight:700}
.card{border:1px solid #ccc;padding:0 1em;margin:1em 0;max-width:60em}
.filters{margin:.5em 0}
.viewer{display:flex;gap:1.5em;flex-wrap:wrap} .tools button.active{background:#1565c0;color:#fff}
#canvas{background:#000;border:1px solid #999;cursor:grab;max-width:100%} .muted{color:#555}
#legend{display:flex;gap:1em;align-items:center;margin:.3em 0} tr.selected{background:#fff3c4}
.filters input,.filters select{margin-right:.5em}"""


def page(
    title: str,
    body: str,
    *,
    user: User | None = None,
    script: str = "",
    scripts: tuple[str, ...] | list[str] = (),
) -> str:
    nav = ""
    if user is not None:
        admin = (
            ' <a href="/audit">audit log</a> <a href="/monitoring">monitoring</a>'
            if user.role == "admin"
            else ""
        )
        nav = (
            f'<nav><a href="/">worklist</a> <a href="/models">models</a>{admin}'
            f" <span>signed in as {html.escape(user.name)} ({user.role})</span>"
            ' <a href="#" id="logout">log out</a></nav>'
        )
        script += (
            'document.getElementById("logout").addEventListener("click", async (e) => {'
            'e.preventDefault(); await fetch("/api/logout", {method: "POST"});'
            'location.href = "/login";});'
        )
    external = "".join(f'<script src="{html.escape(src)}"></script>' for src in scripts)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)} - medsight</title><style>{_STYLE}</style></head><body>
<div class="banner" role="alert">medsight - {BANNER}</div>{nav}<main>{body}</main>
<script>{script}</script>{external}</body></html>"""
