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

_TAG = re.compile(r"<answer>\s*(.*?)\s*(?:</answer>|$)", re.IGNORECASE | re.DOTALL)
_PHRASE = re.compile(r"(?:final answer|answer)\s*(?:is|:|=)\s*([^\n]+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def parse_answer(text: str) -> str | None:
    """The answer in `text`: `<answer>X</answer>`, else `answer: X`, else the last number."""
    if not isinstance(text, str) or not text:
        return None
    for pattern in (_TAG, _PHRASE):
        found = [m.group(1).strip() for m in pattern.finditer(text)]
        found = [f for f in found if f]
        if found:
            return _clean(found[-1])
    return last_number(text)


def last_number(text: str) -> str | None:
    """The last number in text, normalised ("1,200" -> "1200", "7.0" -> "7")."""
    numbers = _NUMBER.findall(text or "")
    return normalise_number(numbers[-1]) if numbers else None


def normalise_number(token: str) -> str:
    token = token.replace(",", "").strip()
    try:
        value = float(token)
    except ValueError:
        return token
    if value.is_integer():
        return str(int(value))
    return repr(value)


def _clean(answer: str) -> str:
    answer = answer.strip().rstrip(".").strip()
    # An answer that is just a number (perhaps with words) compares as that number.
    if _NUMBER.fullmatch(answer.replace(" ", "")):
        return normalise_number(answer.replace(" ", ""))
    return answer


def parse_number_answer(text: str) -> str | None:
    """For numeric tasks: the tagged/phrased answer if it holds a number, else the last number."""
    answer = parse_answer(text)
    if answer is None:
        return None
    return last_number(answer)


def answers_match(predicted: str | None, reference: str | None) -> bool:
    """Case- and space-insensitive equality; numbers compare by value."""
    if predicted is None or reference is None:
        return False
    a, b = predicted.strip().lower(), reference.strip().lower()
    if a == b:
        return True
    try:
        return float(a.replace(",", "")) == float(b.replace(",", ""))
    except ValueError:
        return " ".join(a.split()) == " ".join(b.split())
