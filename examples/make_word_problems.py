"""Write examples/word_problems.jsonl: 240 one-step word problems with answers and a split
column (train / test), the task file of the tasks-from-data example (docs/first-scenario.md). Deterministic:
running it again writes the same file.

    python examples/make_word_problems.py [--out examples/word_problems.jsonl]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEOPLE = ["Ava", "Noah", "Iris", "Omar", "Lena", "Kai", "Rosa", "Theo", "Nina", "Ivan"]
STORIES = [
    ("{p} has {a} pencils and buys {b} more. How many pencils does {p} have now?", "+"),
    ("A shelf holds {a} books. {p} puts {b} more books on it. How many books are on the shelf?", "+"),
    ("{p} picked {a} cherries in the morning and {b} in the afternoon. How many cherries in all?", "+"),
    ("{p} had {a} stickers and gave {b} to a friend. How many stickers are left?", "-"),
    ("A bus carries {a} people. At a stop, {b} get off. How many people are still on the bus?", "-"),
    ("{p} baked {a} cookies and the family ate {b}. How many cookies remain?", "-"),
]


def problems(count: int = 240, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < count:
        template, op = rng.choice(STORIES)
        a, b = rng.randint(2, 30), rng.randint(1, 20)
        if op == "-":
            a, b = max(a, b) + 1, min(a, b)
        prompt = template.format(p=rng.choice(PEOPLE), a=a, b=b)
        if prompt in seen:
            continue
        seen.add(prompt)
        rows.append({
            "id": f"wp-{len(rows):04d}",
            "prompt": prompt,
            "answer": str(a + b if op == "+" else a - b),
            "split": "test" if rng.random() < 0.2 else "train",
        })
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "word_problems.jsonl"))
    args = parser.parse_args(argv)
    Path(args.out).write_text("".join(json.dumps(row) + "\n" for row in problems()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
