"""The docs site builds strictly, the README stays short and agrees with the one results source,
and the results source re-runs a row."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import published

ROOT = Path(__file__).resolve().parent.parent


def test_docs_site_builds_strictly(tmp_path):
    """A broken link or anchor, a page missing from the nav or an unknown figure fails here."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # mkdocs-material's banner about its successor
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    results = (tmp_path / "site" / "results" / "index.html").read_text()
    for row in published.load().rows:
        assert f'id="{row.id}"' in results, f"row {row.id} has no anchor on the results page"
    assert "--exploitability" in (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()


def test_readme_is_short_and_its_headlines_come_from_the_source():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert published.sync_readme(published.load(), check=True), "python -m benchmarks.published readme"
    for link in re.findall(r"\]\(((?:docs|examples)/[^)#]+)", text):
        assert (ROOT / link).exists(), f"README links to a missing {link}"


def test_published_rows_are_complete():
    rows = published.load().rows
    assert sum(row.headline for row in rows) == 5
    for row in rows:
        assert row.topics and row.command and row.commit
        assert row.target is None or row.reached is not None, row.id


def _row(rerun: dict, **fields) -> published.Row:
    base = dict(id="toy", kind="performance", topics=["analysis"], claim="toy", figure="1", value=1.0,
                date="2026-12-07", commit="abcdef0", hardware="cpu", threads="1", beside="nothing",
                command="true", rerun=rerun)
    return published.Row.model_validate({**base, **fields})


@pytest.mark.parametrize("run, read, expected", [
    ("echo 'speed: 2.5 x'", "stdout:speed", 2.5),
    ("echo '{\"a\": {\"b\": 7}}' > {out}/r.json", "json:r.json:a.b", 7.0),
    ("mkdir {out}/run && printf '{\"x\": 1}\\n{\"y\": 0}\\n{\"x\": 3}\\n' > {out}/run/metrics.jsonl",
     "metrics:run:x", 3.0),
])
def test_rerun_reads_the_figure_each_way(run, read, expected):
    value, _ = published.rerun(_row({"run": run, "read": read}))
    assert value == expected


def test_rerun_names_a_missing_figure_and_a_failed_command():
    with pytest.raises(ValueError, match="speed"):
        published.rerun(_row({"run": "echo other: 1", "read": "stdout:speed"}))
    with pytest.raises(SystemExit, match="exit 3"):
        published.rerun(_row({"run": "exit 3", "read": "stdout:speed"}))


def test_bad_rows_are_refused():
    with pytest.raises(ValueError, match="reached"):
        _row(None, target=">= 2")
    with pytest.raises(ValueError, match="unknown topics"):
        _row(None, topics=["nope"])
    with pytest.raises(ValueError, match="read="):
        _row({"run": "true", "read": "stdout"})


def test_page_markers_render_from_the_source_and_unknown_ones_fail():
    sys.path.insert(0, str(ROOT))
    from mkdocs.exceptions import PluginError

    from docs import hooks

    row = published.load().rows[0]
    page = SimpleNamespace(file=SimpleNamespace(src_uri="reference/x.md"))
    out = hooks.on_page_markdown(f"see {{{{ result:{row.id} }}}}", page, None, None)
    assert f"(../results.md#{row.id})" in out and row.figure in out
    table = hooks.on_page_markdown(f"{{{{ results:{row.topics[0]} }}}}", page, None, None)
    assert row.id in table
    with pytest.raises(PluginError, match="no-such-row"):
        hooks.on_page_markdown("{{ result:no-such-row }}", page, None, None)


def test_every_command_line_argument_is_explained():
    from docs.gen.cli_reference import cli_reference

    blank = [line for line in cli_reference().splitlines() if re.match(r"\| `.*\| *\|$", line)]
    assert not blank, f"arguments without help: {blank}"


def test_generated_pages_are_up_to_date():
    from docs.gen.pages import stale_pages

    assert not stale_pages(), "python -m docs.gen.pages"


def test_record_rewrites_one_row_and_keeps_the_rest_byte_for_byte(tmp_path):
    source = tmp_path / "published.yaml"
    text = (ROOT / "benchmarks" / "published.yaml").read_text()
    source.write_text(text)
    rows = published.load(source).rows
    target = next(row for row in rows if row.kind == "performance" and row.rerun)
    published.record(source, target, 1.2345, beside="a test")
    after = published.load(source)
    new = after.row(target.id)
    assert (new.value, new.figure, new.beside, new.status) == (1.2345, "1.234", "a test", "current")
    assert [r.id for r in after.rows] == [r.id for r in rows]
    before_lines, after_lines = text.splitlines(), source.read_text().splitlines()
    start = before_lines.index(f"- id: {target.id}")
    assert before_lines[:start] == after_lines[:start]  # everything above the row, comments included
    assert after.rows[after.rows.index(new) + 1:] == rows[rows.index(target) + 1:]
