"""mkdocs hooks: the generated pages (results, configuration, command line; docs/gen/pages.py)
and every figure quoted in a page, all rendered from the project's own sources at build time.

In a page, `{{ results:TOPIC }}` becomes the table of that topic's published rows and
`{{ result:ID }}` one row's figure, linked to its record on the results page; an unknown topic
or id fails the build.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import published  # noqa: E402
from docs.gen.pages import stale_pages  # noqa: E402

MARKER = re.compile(r"\{\{\s*(results?):([a-z0-9-]+)\s*\}\}")
_source: published.Published | None = None


def _published() -> published.Published:
    global _source
    if _source is None:
        try:
            _source = published.load()
        except SystemExit as exc:  # load() exits with the validation error as its message
            raise PluginError(str(exc)) from None
    return _source


def on_pre_build(config) -> None:
    """Stop when a generated page is older than its source (`make docs` regenerates them first)."""
    global _source
    _source = None  # `mkdocs serve` rebuilds: read the file again
    _published()  # a bad results file fails here, with its validation error
    stale = stale_pages()
    if stale:
        raise PluginError(f"generated pages out of date: {', '.join(stale)}; run python -m docs.gen.pages")


def on_page_markdown(markdown: str, page, config, files) -> str:
    source = _published()
    results = "../" * page.file.src_uri.count("/") + "results.md"
    if page.file.src_uri == "results.md":
        results = ""

    def render(match: re.Match) -> str:
        kind, name = match.groups()
        try:
            if kind == "results":
                return published.topic_table(source.topic(name), link=results)
            row = source.row(name)
        except KeyError as exc:
            raise PluginError(f"{page.file.src_uri}: {exc.args[0]}") from None
        return f"[{row.figure}]({results}#{row.id})"

    return MARKER.sub(render, markdown)
