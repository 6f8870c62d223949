"""Tasks from data: lists of Tasks, JSONL, CSV, Parquet and any iterable of rows, with a
column mapping; the data's own split column or the key hash; one-line errors naming file,
row and column; and the shipped word-problem file as its script writes it."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from multiagent_rl import (
    Role,
    Scenario,
    Task,
    TaskDataError,
    TaskTable,
    from_edges,
    load_scenario,
    tasks_from,
    team_reward,
)

ROOT = Path(__file__).resolve().parents[1]
ROWS = [{"id": f"q{i}", "question": f"What is {i} + 1?", "solution": i + 1, "part": "test" if i % 4 == 0 else "train"}
        for i in range(20)]
MAPPING = {"prompt": "question", "answer": "solution", "split": "part"}


def write(tmp_path: Path, kind: str, rows=ROWS) -> Path:
    path = tmp_path / f"tasks.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "csv":
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet", "rows"])
def test_every_source_gives_the_same_tasks_and_splits(tmp_path, kind):
    source = iter(ROWS) if kind == "rows" else write(tmp_path, kind)  # "rows": any iterable, as a datasets.Dataset
    table = tasks_from(source, **MAPPING)
    assert isinstance(table, TaskTable) and len(table) == 20
    assert [t.key for t in table.tasks] == [f"q{i}" for i in range(20)]
    assert table.tasks[3].prompt == "What is 3 + 1?" and table.tasks[3].answer == "4"
    assert [table.split_of(t) for t in table.tasks][:5] == ["eval", "train", "train", "train", "eval"]


def scenario_on(table) -> Scenario:
    return Scenario(
        name="qa", roles=[Role("solver", "Answer.")], graph=from_edges([], agents=["solver"]), schedule=[["solver"]],
        make_task=table, reward=lambda task, episode: team_reward(1.0, ["solver"]),
    )


def test_a_scenario_draws_training_tasks_only_from_the_train_split_and_holds_out_the_rest():
    scenario = scenario_on(tasks_from(ROWS, **MAPPING))
    rng = random.Random(0)
    drawn = {scenario.sample_task(rng, "train").key for _ in range(200)}
    assert drawn == {f"q{i}" for i in range(20) if i % 4}
    assert {t.key for t in scenario.heldout_tasks(5)} == {f"q{i}" for i in range(0, 20, 4)}


def test_without_a_split_column_the_key_hash_splits_as_for_generated_tasks():
    scenario = scenario_on(tasks_from([Task(key=f"k{i}", prompt=f"p{i}") for i in range(100)]))
    splits = {scenario.split_of(t) for t in scenario.make_task.tasks}
    assert splits == {"train", "eval"}
    assert scenario.split_of(Task(key="k7", prompt="p")) == scenario_on(lambda r: None).split_of(Task(key="k7", prompt="p"))


def test_private_views_and_meta_come_from_columns():
    rows = [{"q": "Add.", "a": "3", "left": "1", "right": "2", "level": 1}]
    table = tasks_from(rows, prompt="q", answer="a", private={"worker_a": "left", "worker_b": "right"}, meta=["level"])
    task = table.tasks[0]
    assert task.private == {"worker_a": "1", "worker_b": "2"} and task.meta == {"level": 1} and task.key == "Add."


@pytest.mark.parametrize("rows, mapping, message", [
    ([{"question": "x"}], {"prompt": "question", "answer": "solution"}, r"row 1: no column 'solution' \(columns: question\)"),
    ([{"prompt": "  ", "answer": 1}], {}, r"row 1, column 'prompt': the prompt must be non-empty text"),
    ([{"prompt": "a", "answer": 1, "s": "dev"}], {"split": "s"}, r"row 1, column 's': unknown split 'dev'"),
    ([{"prompt": "a", "answer": 1}, {"prompt": "a", "answer": 2}], {}, r"row 2: key 'a' repeats an earlier row"),
    ([{"prompt": "a", "answer": 1}, 7], {}, r"row 2 is a int, not a mapping"),
    ([], {}, r"no tasks \(the data is empty\)"),
])
def test_bad_rows_name_the_row_and_the_column(rows, mapping, message):
    with pytest.raises(TaskDataError, match=message):
        tasks_from(rows, **mapping)


def test_bad_files_name_the_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{"prompt": \n')
    (tmp_path / "tasks.txt").write_text("x")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    for name, message in [("empty.jsonl", "empty.jsonl: no tasks"), ("bad.jsonl", "bad.jsonl: row 2 is not JSON"),
                          ("tasks.txt", "unknown format '.txt'"), ("bad.parquet", "not a readable Parquet file"),
                          ("missing.csv", "does not exist")]:
        with pytest.raises(TaskDataError, match=message):
            tasks_from(tmp_path / name, answer=None)


def test_the_shipped_word_problems_are_what_the_script_writes(tmp_path):
    out = tmp_path / "wp.jsonl"
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_word_problems.py"), "--out", str(out)], check=True,
                   capture_output=True)
    assert out.read_bytes() == (ROOT / "examples" / "word_problems.jsonl").read_bytes()


def test_debate_trains_on_the_shipped_file_with_its_own_split():
    scenario = load_scenario("debate", tasks=str(ROOT / "examples" / "word_problems.jsonl"), tasks_split="split")
    held = scenario.heldout_tasks(10)
    lines = [json.loads(line) for line in (ROOT / "examples" / "word_problems.jsonl").read_text().splitlines()]
    test_ids = {r["id"] for r in lines if r["split"] == "test"}
    assert {t.key for t in held} <= test_ids
    assert scenario.sample_task(random.Random(0), "train").key not in test_ids


def test_the_readme_command_trains_debate_on_the_shipped_file(single_thread, tmp_path, capsys):
    from multiagent_rl.cli import main

    code = main(["train", "debate", "--out", str(tmp_path / "run"), "--set", "model=tiny", "--set", "steps=1",
                 "--set", "tasks_per_step=2", "--set", "group_size=2", "--set", "eval_episodes=2", "--set", "log_with=[]",
                 "--set", "progress=false", "--set", "max_new_tokens=3", "--set", "lora.rank=2",
                 "--set", f"scenario_options.tasks={ROOT / 'examples' / 'word_problems.jsonl'}",
                 "--set", "scenario_options.tasks_split=split"])
    assert code == 0, capsys.readouterr().err
    from multiagent_rl import read_episodes

    episodes = read_episodes(tmp_path / "run" / "episodes" / "step-000001.msgpack").episodes
    assert all(e.task.key.startswith("wp-") for e in episodes)


def test_bad_task_data_at_the_command_line_is_one_line(capsys, tmp_path):
    from multiagent_rl.cli import main

    (tmp_path / "bad.jsonl").write_text('{"prompt": "What is 1 + 1?"}\n')
    code = main(["train", "debate", "--out", str(tmp_path / "run"), "--set", "model=tiny",
                 "--set", f"scenario_options.tasks={tmp_path / 'bad.jsonl'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "bad.jsonl: row 1: no column 'answer'" in err
