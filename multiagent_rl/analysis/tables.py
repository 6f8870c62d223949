"""Table: the return type of every analysis metric, a list of row dicts that pandas loads as is.

No pandas at run time: a Table *is* a list of dicts, so ``pandas.DataFrame(table)`` and
``pandas.DataFrame.from_records(table.to_records())`` both work, and so does plain Python.

>>> t = Table([{"agent": "a", "messages": 3}, {"agent": "b", "messages": 1}])
>>> t.column("messages"), t.where(agent="b").to_records()
([3, 1], [{'agent': 'b', 'messages': 1}])
>>> print(t.to_text())
agent  messages
-----  --------
a             3
b             1
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


class Table(list):
    """Rows (dicts with the same keys) in a fixed column order; undefined values are None."""

    def __init__(self, rows: Iterable[Mapping[str, Any]] = (), columns: Sequence[str] | None = None):
        super().__init__(dict(r) for r in rows)
        self._columns = list(columns) if columns is not None else None

    @property
    def columns(self) -> list[str]:
        """Column names: the declared ones, else every key in first-seen order."""
        if self._columns is not None:
            return list(self._columns)
        seen: dict[str, None] = {}
        for row in self:
            seen.update(dict.fromkeys(row))
        return list(seen)

    def to_records(self) -> list[dict[str, Any]]:
        """Plain list of dicts (copies), for ``pandas.DataFrame.from_records`` or JSON."""
        columns = self.columns
        return [{c: row.get(c) for c in columns} for row in self]

    def column(self, name: str) -> list[Any]:
        if name not in self.columns:
            raise KeyError(f"no column {name!r}; columns: {', '.join(self.columns) or '(none)'}")
        return [row.get(name) for row in self]

    def where(self, **equal: Any) -> Table:
        """Rows whose columns equal the given values: ``t.where(agent="a")``."""
        return Table((r for r in self if all(r.get(k) == v for k, v in equal.items())), self._columns)

    def to_text(self, max_rows: int | None = None) -> str:
        """Aligned plain-text rendering (numbers right-aligned, 3 significant digits)."""
        columns = self.columns
        rows = list(self)[:max_rows] if max_rows is not None else list(self)
        cells = [[format_value(r.get(c)) for c in columns] for r in rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
        numeric = [all(_is_number(r.get(c)) or r.get(c) is None for r in rows) for c in columns]

        def line(values: Sequence[str]) -> str:
            parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
            return "  ".join(parts).rstrip()

        out = [line(columns), line(["-" * w for w in widths])] + [line(row) for row in cells]
        if max_rows is not None and len(self) > max_rows:
            out.append(f"... {len(self) - max_rows} more rows")
        return "\n".join(out)

    def to_html(self, max_rows: int | None = None, css_class: str = "data") -> str:
        """An escaped HTML <table> (numbers right-aligned via the 'num' class)."""
        columns = self.columns
        rows = list(self)[:max_rows] if max_rows is not None else list(self)
        head = "".join(f"<th>{escape(c)}</th>" for c in columns)
        body = []
        for r in rows:
            tds = []
            for c in columns:
                value = r.get(c)
                cls = ' class="num"' if _is_number(value) else ""
                tds.append(f"<td{cls}>{escape(format_value(value))}</td>")
            body.append("<tr>" + "".join(tds) + "</tr>")
        more = ""
        if max_rows is not None and len(self) > max_rows:
            more = f'<p class="note">{len(self) - max_rows} more rows not shown.</p>'
        return (
            f'<table class="{css_class}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>{more}"
        )

    def __repr__(self) -> str:
        return f"Table({len(self)} rows, columns={self.columns})"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def format_value(value: Any) -> str:
    """Short human form: 3 significant digits for floats, '–' for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.2e}"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def escape(text: Any) -> str:
    """HTML-escape any text; '://' is written as an entity so model text never forms a URL
    in the page's source (it still reads the same in the browser)."""
    return html.escape(str(text), quote=True).replace("://", ":&#47;&#47;")


def mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    total, count = 0.0, 0
    for v in values:
        if v is not None:
            total += v
            count += 1
    return total / count if count else None
