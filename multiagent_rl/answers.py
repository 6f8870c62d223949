"""Robust answer extraction from free model text.

Small models echo the question ("66 + 24 = 100"), so the *first* number is
usually part of the question; we take an explicit answer tag first, then an
"answer:" phrase, then the *last* number.

>>> parse_answer("I think 3 + 4 = 7. <answer>7</answer>")
'7'
>>> parse_answer("66 + 24 = 90")
'90'
>>> parse_answer("Final answer: blue square")
'blue square'
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_TAG = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.IGNORECASE | re.DOTALL)
_PHRASE = re.compile(r"(?:final answer|answer)\s*(?:is\b\s*[:=]?|[:=])", re.IGNORECASE)
_SIGN = "-\u2212"  # ASCII hyphen-minus and the Unicode minus sign
_NUMBER = re.compile(rf"[{_SIGN}]?(?:\d+(?:,\d{{3}})*(?:\.\d+)?|\.\d+)")
_MAX_INT_DIGITS = 4000  # below Python's int() string limit


def parse_answer(text: str) -> str | None:
    """The answer in `text`: `<answer>X</answer>`, else `answer: X`, else the last number."""
    if not isinstance(text, str) or not text:
        return None
    tagged = [m.group(1).strip() for m in _TAG.finditer(text)]
    tagged = [t for t in tagged if t]
    if tagged:
        return _clean(tagged[-1])
    phrases = list(_PHRASE.finditer(text))
    if phrases:
        # Take the last phrase, up to the end of its line: later corrections win.
        rest = text[phrases[-1].end() :].split("\n", 1)[0].strip()
        if rest:
            return _clean(rest)
    return last_number(text)


def last_number(text: str) -> str | None:
    """The last number in text, normalised ("1,200" -> "1200", "7.0" -> "7", "\u22123" -> "-3")."""
    numbers = _NUMBER.findall(text or "")
    return normalise_number(numbers[-1]) if numbers else None


def normalise_number(token: str) -> str:
    """Canonical text of a number; exact for big integers (no float rounding)."""
    token = token.replace(",", "").replace("\u2212", "-").strip()
    value = _as_decimal(token)
    if value is None:
        return token
    if value == value.to_integral_value():
        digits = token.split(".")[0].lstrip("-").lstrip("0") or "0"
        if len(digits) <= _MAX_INT_DIGITS:
            return str(int(value))
        return ("-" if token.startswith("-") else "") + digits
    return format(value.normalize(), "f")


def _as_decimal(token: str) -> Decimal | None:
    try:
        value = Decimal(token)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _clean(answer: str) -> str:
    answer = answer.strip().rstrip(".").strip()
    # An answer that is just a number compares as that number.
    compact = answer.replace(" ", "")
    if _NUMBER.fullmatch(compact):
        return normalise_number(compact)
    return answer


def parse_number_answer(text: str) -> str | None:
    """For numeric tasks: the number in the tagged/phrased answer, else the last number in text."""
    answer = parse_answer(text)
    if answer is None:
        return None
    return last_number(answer) or last_number(text)


def is_bare_number(text: str) -> bool:
    """True when `text` is one number and nothing else (an answer tag around it and a final
    period are allowed): what "reply with only the number" asks for.

    >>> is_bare_number(" 13."), is_bare_number("<answer>-4</answer>"), is_bare_number("6 + 7 = 13")
    (True, True, False)
    """
    if not isinstance(text, str):
        return False
    core = text.strip()
    tagged = re.fullmatch(r"<answer>(.*?)(?:</answer>)?", core, re.IGNORECASE | re.DOTALL)
    if tagged:
        core = tagged.group(1).strip()
    core = core.removesuffix(".").strip()
    return bool(_NUMBER.fullmatch(core))


def answers_match(predicted: str | None, reference: str | None) -> bool:
    """Case- and space-insensitive equality; numbers compare by value."""
    if predicted is None or reference is None:
        return False
    a, b = predicted.strip().lower(), reference.strip().lower()
    if a == b:
        return True
    x, y = _as_decimal(a.replace(",", "")), _as_decimal(b.replace(",", ""))
    if x is not None and y is not None:
        return x == y
    return " ".join(a.split()) == " ".join(b.split())
