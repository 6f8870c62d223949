"""The report page: one self-contained HTML file (inline CSS, images as data: URIs, no
scripts, nothing fetched). Every piece of model or task text goes through `escape`."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from ..records import Episode
from .tables import Table, escape, format_value
from .textstats import answer_key

CSS = """
:root { --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f6f7fb; --card:#fff; --accent:#2563eb;
        --good:#15803d; --bad:#b91c1c; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
header { background:linear-gradient(120deg,#1e3a8a,#2563eb); color:#fff; padding:28px 0 22px; }
header h1 { margin:0; font-size:26px; letter-spacing:.2px; }
header p { margin:6px 0 0; opacity:.9; }
.wrap { max-width:1180px; margin:0 auto; padding:0 24px; }
nav { margin-top:14px; display:flex; flex-wrap:wrap; gap:8px; }
nav a { color:#fff; text-decoration:none; background:rgba(255,255,255,.16); padding:3px 10px;
        border-radius:999px; font-size:13px; }
section { background:var(--card); border:1px solid var(--line); border-radius:12px;
          margin:22px 0; padding:20px 24px; box-shadow:0 1px 2px rgba(0,0,0,.04); }
h2 { margin:0 0 6px; font-size:20px; }
h3 { margin:18px 0 6px; font-size:15px; color:#374151; }
p.lead { margin:0 0 14px; color:var(--muted); }
p.note { color:var(--muted); font-size:13px; margin:6px 0; }
img.figure { display:block; max-width:100%; height:auto; margin:8px auto; }
.grid2 { display:grid; grid-template-columns:minmax(0,1fr) minmax(0,1fr); gap:20px; align-items:start; }
.scroll { overflow-x:auto; }
table.data { border-collapse:collapse; width:100%; font-size:13px; margin:6px 0 4px; }
table.data th { text-align:left; font-weight:600; color:#374151; background:#f3f4f6;
                border-bottom:1px solid var(--line); padding:6px 8px; white-space:nowrap; }
table.data td { border-bottom:1px solid #f1f2f4; padding:5px 8px; }
table.data td.num { text-align:right; font-variant-numeric:tabular-nums; }
table.data tbody tr:nth-child(even) { background:#fafbfc; }
table.summary td:first-child { font-weight:600; color:#374151; }
table.summary td { font-variant-numeric:tabular-nums; }
.episode { border:1px solid var(--line); border-radius:10px; padding:12px 14px; margin-bottom:14px;
           background:#fcfcfd; }
.episode .meta { font-size:12px; color:var(--muted); }
.episode .task { margin:6px 0 8px; font-weight:500; }
.round { font-size:12px; font-weight:700; color:var(--muted); text-transform:uppercase;
         letter-spacing:.6px; margin:10px 0 4px; }
.msg { border-left:3px solid var(--accent); background:#fff; padding:6px 10px; margin:4px 0;
       border-radius:0 6px 6px 0; }
.msg .who { font-weight:600; font-size:13px; }
.msg .to { color:var(--muted); font-weight:400; }
.msg .text { white-space:pre-wrap; overflow-wrap:anywhere; font-size:13.5px; }
.badge { display:inline-block; font-size:11.5px; padding:0 7px; border-radius:999px; margin-left:6px;
         background:#eef2ff; color:#3730a3; }
.badge.good { background:#dcfce7; color:var(--good); }
.badge.bad { background:#fee2e2; color:var(--bad); }
.outcome { margin-top:8px; font-size:13px; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:10px 0 30px; }
@media (max-width: 900px) { .grid2 { grid-template-columns:1fr; } }
"""

AGENT_COLOURS = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777"]


def figure(png_base64: str, alt: str) -> str:
    return f'<img class="figure" alt="{escape(alt)}" src="data:image/png;base64,{png_base64}">'


def section(anchor: str, title: str, lead: str, body: str) -> str:
    lead_html = f'<p class="lead">{escape(lead)}</p>' if lead else ""
    return f'<section id="{escape(anchor)}"><h2>{escape(title)}</h2>{lead_html}{body}</section>'


def table(t: Table, max_rows: int | None = 40, summary: bool = False) -> str:
    css = "data summary" if summary else "data"
    return f'<div class="scroll">{t.to_html(max_rows=max_rows, css_class=css)}</div>'


def _badge(answer: str | None, truth: str | None) -> str:
    if answer is None:
        return '<span class="badge">no answer</span>'
    if truth is None:
        return f'<span class="badge">{escape(answer)}</span>'
    good = answer_key(answer) == answer_key(truth)
    return f'<span class="badge {"good" if good else "bad"}">{escape(answer)}</span>'


def _clip(text: str, limit: int = 700) -> str:
    return text if len(text) <= limit else text[:limit] + f" … [{len(text) - limit} more characters]"


def transcript(episode: Episode, agents: Sequence[str]) -> str:
    """One episode as a card: task, every message by round, the team's outcome."""
    colour = {a: AGENT_COLOURS[i % len(AGENT_COLOURS)] for i, a in enumerate(agents)}
    truth = episode.task.answer
    parts = [
        '<div class="episode">',
        f'<div class="meta">step {escape(episode.step if episode.step is not None else "–")} · '
        f'{escape(episode.split)} · episode {escape(episode.episode_id[:16])}</div>',
        f'<div class="task">{escape(_clip(episode.task.prompt, 400))}</div>',
    ]
    if truth is not None:
        parts.append(f'<div class="meta">reference answer: {escape(truth)}</div>')
    for r in sorted({t.round for t in episode.turns}):
        parts.append(f'<div class="round">Round {r}</div>')
        for t in (t for t in episode.turns if t.round == r):
            to = ", ".join(t.message.receivers) or "nobody"
            parts.append(
                f'<div class="msg" style="border-left-color:{colour.get(t.agent, "#6b7280")}">'
                f'<div class="who">{escape(t.agent)} <span class="to">→ {escape(to)}</span>'
                f"{_badge(t.message.answer, truth)}</div>"
                f'<div class="text">{escape(_clip(t.message.text))}</div></div>'
            )
    parts.append(
        f'<div class="outcome">team answer {_badge(episode.team_answer, truth)} · '
        f"team reward {escape(format_value(episode.team_reward()))}</div></div>"
    )
    return "".join(parts)


def transcripts_side_by_side(early: Sequence[Episode], late: Sequence[Episode], agents: Sequence[str]) -> str:
    if not early and not late:
        return '<p class="note">No episodes to show.</p>'

    def column(title: str, episodes: Sequence[Episode]) -> str:
        cards = "".join(transcript(e, agents) for e in episodes) or '<p class="note">none</p>'
        return f"<div><h3>{escape(title)}</h3>{cards}</div>"

    return f'<div class="grid2">{column("Early in training", early)}{column("Late in training", late)}</div>'


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document; `sections` are (anchor, nav label, section html)."""
    nav = "".join(f'<a href="#{escape(anchor)}">{escape(label)}</a>' for anchor, label, _ in sections)
    body = "".join(html for _, _, html in sections)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'  # stops the browser asking for /favicon.ico
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f'<header><div class="wrap"><h1>{escape(title)}</h1><p>{escape(subtitle)}</p>'
        f"<nav>{nav}</nav></div></header>"
        f'<main class="wrap">{body}</main>'
        f'<footer>multiagent-rl analyse · written {escape(stamp)} · self-contained: opens offline</footer>'
        "</body></html>\n"
    )
