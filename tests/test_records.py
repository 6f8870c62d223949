"""Tests for multiagent_rl.records: schemas, the framed msgpack episode log, crash safety."""

from __future__ import annotations

import ast
import subprocess
import sys
import zlib
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import multiagent_rl.records as records
from multiagent_rl.records import (
    MAGIC,
    Episode,
    EpisodeLog,
    Message,
    Skipped,
    Task,
    Turn,
    encode_frame,
    read_episodes,
    read_run_episodes,
)


def make_episode(i: int = 0, text: str = "66 + 24 = 90", **fields) -> Episode:
    task = Task(key=f"task-{i}", prompt=f"What is {i} + 1?", answer=str(i + 1), private={"a": "psst"})
    message = Message(sender="a", receivers=["b"], round=0, text=text, answer="90", visibility={"b": "full"})
    turn = Turn(agent="a", round=0, adapter="a", message=message, prompt_tokens=5, completion_tokens=7)
    base = dict(
        episode_id=f"ep-{i}",
        scenario="debate",
        task=task,
        turns=[turn],
        rewards={"a": 1.0, "b": 0.5},
        teams={"a": "team", "b": "team"},
        team_answer="90",
        step=i,
    )
    base.update(fields)
    return Episode(**base)


def frame_bounds(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every frame in a clean log."""
    bounds, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 4 : pos + 8], "big")
        end = pos + 12 + length
        bounds.append((pos, end))
        pos = end
    return bounds


@pytest.fixture
def log_bytes(tmp_path: Path) -> tuple[list[Episode], bytes]:
    episodes = [make_episode(i) for i in range(3)]
    path = tmp_path / "log.msgpack"
    EpisodeLog(path, fsync=False).extend(episodes)
    return episodes, path.read_bytes()


# ----- schemas ------------------------------------------------------------------
@pytest.mark.parametrize(
    "model, data",
    [
        (Task, {"key": "k", "prompt": "p", "extra": 1}),
        (Message, {"sender": "a", "round": 0, "text": "t", "oops": True}),
        (Turn, {"agent": "a", "round": 0, "message": {"sender": "a", "round": 0, "text": "t"}, "x": 1}),
        (Episode, {"episode_id": "e", "scenario": "s", "task": {"key": "k", "prompt": "p"}, "extra": 1}),
    ],
)
def test_extra_keys_are_rejected(model, data):
    with pytest.raises(ValidationError, match="[Ee]xtra"):
        model.model_validate(data)


def test_extra_keys_rejected_in_nested_records():
    data = make_episode().model_dump()
    data["turns"][0]["message"]["typo"] = "x"
    with pytest.raises(ValidationError):
        Episode.model_validate(data)


@pytest.mark.parametrize(
    "model, data",
    [
        (Task, {"prompt": "p"}),  # key is required
        (Message, {"sender": "a", "round": "first", "text": "t"}),
        (Turn, {"agent": "a", "round": 0}),  # message is required
        (Episode, {"episode_id": "e", "scenario": "s", "task": {"key": "k", "prompt": "p"}, "split": "test"}),
        (Episode, {"episode_id": "e", "scenario": "s", "task": {"key": "k", "prompt": "p"}, "rewards": {"a": "hi"}}),
    ],
)
def test_invalid_fields_are_rejected(model, data):
    with pytest.raises(ValidationError):
        model.model_validate(data)


def test_defaults_and_helpers():
    task = Task(key="k", prompt="p")
    assert task.answer is None and task.private == {} and task.meta == {}
    ep = make_episode()
    assert ep.messages == [ep.turns[0].message]
    assert ep.team_reward() == pytest.approx(0.75)
    assert Episode(episode_id="e", scenario="s", task=task).team_reward() == 0.0
    assert ep.split == "train"


# ----- the log: round trips ---------------------------------------------------------
def test_append_and_read_round_trip(tmp_path):
    path = tmp_path / "nested" / "dir" / "log.msgpack"  # parent folders are created
    log = EpisodeLog(path)
    episodes = [make_episode(i) for i in range(5)]
    for ep in episodes[:2]:
        log.append(ep)
    log.extend(episodes[2:])
    result = read_episodes(path)
    assert result.episodes == episodes
    assert result.skipped == [] and result.complete
    assert result.describe() == "5 episodes, nothing skipped"


def test_reopening_a_log_appends(tmp_path):
    path = tmp_path / "log.msgpack"
    EpisodeLog(path).append(make_episode(0))
    EpisodeLog(path).append(make_episode(1))
    assert [e.episode_id for e in read_episodes(path).episodes] == ["ep-0", "ep-1"]


def test_empty_file(tmp_path):
    path = tmp_path / "empty.msgpack"
    path.write_bytes(b"")
    result = read_episodes(path)
    assert result.episodes == [] and result.skipped == [] and result.complete


def test_extend_with_nothing_leaves_an_empty_log(tmp_path):
    path = tmp_path / "log.msgpack"
    EpisodeLog(path).extend([])
    assert read_episodes(path).episodes == []


def test_frame_layout():
    record = {"hello": "world"}
    frame = encode_frame(record)
    payload = msgpack.packb(record, use_bin_type=True)
    assert frame[:4] == MAGIC
    assert int.from_bytes(frame[4:8], "big") == len(payload)
    assert int.from_bytes(frame[8:12], "big") == zlib.crc32(payload)
    assert frame[12:] == payload


# ----- crash safety -------------------------------------------------------------------
def test_truncation_at_every_byte_of_the_last_frame(tmp_path, log_bytes):
    episodes, data = log_bytes
    last_start, last_end = frame_bounds(data)[-1]
    assert last_end == len(data)
    path = tmp_path / "cut.msgpack"
    for cut in range(last_start, len(data)):
        path.write_bytes(data[:cut])
        result = read_episodes(path)
        assert result.episodes == episodes[:-1], f"cut at {cut}"
        if cut == last_start:  # the frame never started: nothing to report
            assert result.skipped == []
            continue
        assert result.skipped, f"cut at {cut} was not reported"
        assert not result.complete
        first = result.skipped[0]
        assert isinstance(first, Skipped)
        assert first.offset == last_start
        assert sum(s.length for s in result.skipped) == cut - last_start  # the whole tail
        assert "truncated" in first.reason, first.reason
        assert "skipped" in result.describe()


def test_crash_then_resume_keeps_later_episodes(tmp_path, log_bytes):
    episodes, data = log_bytes
    last_start, last_end = frame_bounds(data)[-1]
    path = tmp_path / "resumed.msgpack"
    path.write_bytes(data[: (last_start + last_end) // 2])  # crashed mid-write
    EpisodeLog(path).append(make_episode(9))  # the run resumes and appends more
    result = read_episodes(path)
    assert [e.episode_id for e in result.episodes] == ["ep-0", "ep-1", "ep-9"]
    assert len(result.skipped) == 1 and result.skipped[0].offset == last_start


def test_corrupt_byte_in_middle_frame_skips_only_that_frame(tmp_path, log_bytes):
    episodes, data = log_bytes
    (_, _), (mid_start, mid_end), (_, _) = frame_bounds(data)
    path = tmp_path / "corrupt.msgpack"
    for offset in range(mid_start, mid_end):
        corrupted = bytearray(data)
        corrupted[offset] ^= 0xFF
        path.write_bytes(bytes(corrupted))
        result = read_episodes(path)
        assert result.episodes == [episodes[0], episodes[2]], f"byte {offset}"
        assert len(result.skipped) == 1, (offset, result.skipped)
        skipped = result.skipped[0]
        assert (skipped.offset, skipped.length) == (mid_start, mid_end - mid_start), offset
        assert skipped.reason


def test_garbage_appended(tmp_path, log_bytes):
    episodes, data = log_bytes
    path = tmp_path / "garbage.msgpack"
    for garbage in [b"\x00", b"garbage!" * 100, MAGIC, MAGIC + b"\xff" * 20, bytes(range(256))]:
        path.write_bytes(data + garbage)
        result = read_episodes(path)
        assert result.episodes == episodes, garbage
        assert sum(s.length for s in result.skipped) == len(garbage), garbage
        assert all(s.offset >= len(data) for s in result.skipped)


def test_garbage_between_frames(tmp_path, log_bytes):
    episodes, data = log_bytes
    start, _ = frame_bounds(data)[1]
    path = tmp_path / "garbage.msgpack"
    path.write_bytes(data[:start] + b"junk junk" + data[start:])
    result = read_episodes(path)
    assert result.episodes == episodes
    assert [(s.offset, s.length) for s in result.skipped] == [(start, 9)]


def test_valid_frame_that_is_not_an_episode_is_skipped(tmp_path):
    path = tmp_path / "log.msgpack"
    good = make_episode(1)
    path.write_bytes(
        encode_frame({"not": "an episode"})
        + encode_frame(good.model_dump(mode="json"))
        + encode_frame(["a", "list"])  # type: ignore[arg-type]
    )
    result = read_episodes(path)
    assert result.episodes == [good]
    assert len(result.skipped) == 2
    assert all("not an episode" in s.reason for s in result.skipped)


def test_pickle_payload_is_never_unpickled(tmp_path):
    import pickle  # only to build the hostile payload

    payload = pickle.dumps(make_episode(0))
    frame = MAGIC + len(payload).to_bytes(4, "big") + zlib.crc32(payload).to_bytes(4, "big") + payload
    path = tmp_path / "hostile.msgpack"
    path.write_bytes(frame)
    result = read_episodes(path)
    assert result.episodes == [] and len(result.skipped) == 1


def test_missing_log_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_episodes(tmp_path / "nope.msgpack")


# ----- property: any text survives the log exactly -------------------------------------
# Valid UTF-8 text (no lone surrogates), control characters included.
texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)
# Non-finite meta floats are covered by test_non_finite_meta_floats_survive.
json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False) | texts
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=8,
)
finite_or_inf = st.floats(allow_nan=False)  # typed float fields keep inf exactly


@st.composite
def episodes(draw) -> Episode:
    agents = draw(st.lists(texts, min_size=1, max_size=3, unique=True))
    task = Task(
        key=draw(texts),
        prompt=draw(texts),
        answer=draw(st.none() | texts),
        private=draw(st.dictionaries(texts, texts, max_size=2)),
        meta=draw(st.dictionaries(texts, json_values, max_size=3)),
    )
    turns = []
    for r in range(draw(st.integers(0, 3))):
        agent = draw(st.sampled_from(agents))
        message = Message(
            sender=agent,
            receivers=draw(st.lists(st.sampled_from(agents), max_size=3)),
            round=r,
            text=draw(texts),
            answer=draw(st.none() | texts),
            visibility=draw(st.dictionaries(st.sampled_from(agents), st.sampled_from(["full", "answer"]))),
        )
        turns.append(
            Turn(
                agent=agent,
                round=r,
                adapter=draw(st.none() | texts),
                message=message,
                prompt_tokens=draw(st.integers(0, 10**9)),
                completion_tokens=draw(st.integers(0, 10**9)),
                finish_reason=draw(st.none() | texts),
            )
        )
    return Episode(
        episode_id=draw(texts),
        scenario=draw(texts),
        task=task,
        turns=turns,
        rewards={a: draw(finite_or_inf) for a in agents},
        teams={a: draw(texts) for a in agents},
        team_answer=draw(st.none() | texts),
        split=draw(st.sampled_from(["train", "eval", "play"])),
        step=draw(st.none() | st.integers(0, 2**62)),
        group=draw(st.none() | st.integers(0, 1000)),
        seed=draw(st.none() | st.integers(-(2**63), 2**63 - 1)),
        meta=draw(st.dictionaries(texts, json_values, max_size=3)),
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(eps=st.lists(episodes(), min_size=1, max_size=4))
def test_random_episodes_round_trip_exactly(tmp_path, eps):
    path = tmp_path / "prop.msgpack"
    path.unlink(missing_ok=True)
    EpisodeLog(path, fsync=False).extend(eps)
    result = read_episodes(path)
    assert result.skipped == []
    assert result.episodes == eps
    assert [e.model_dump(mode="json") for e in result.episodes] == [e.model_dump(mode="json") for e in eps]


def test_non_finite_meta_floats_survive(tmp_path):
    path = tmp_path / "log.msgpack"
    EpisodeLog(path).append(make_episode(0, meta={"loss": float("inf"), "kl": [float("-inf")]}))
    assert read_episodes(path).episodes[0].meta == {"loss": float("inf"), "kl": [float("-inf")]}


def test_text_containing_the_magic_round_trips(tmp_path):
    path = tmp_path / "magic.msgpack"
    eps = [make_episode(0, text="MRL1" * 10), make_episode(1, text=MAGIC.decode() + "\x00\x01")]
    EpisodeLog(path).extend(eps)
    assert read_episodes(path).episodes == eps


# ----- a run folder -----------------------------------------------------------------------
def test_read_run_episodes_over_several_files(tmp_path):
    run = tmp_path / "run"
    EpisodeLog(run / "episodes" / "step-000002.msgpack").extend([make_episode(3), make_episode(4)])
    EpisodeLog(run / "episodes" / "step-000001.msgpack").extend([make_episode(1), make_episode(2)])
    EpisodeLog(run / "episodes" / "step-000010.msgpack").append(make_episode(5))
    (run / "episodes" / "notes.txt").write_text("not a log")
    # A crash while writing the third file: its complete frames still count.
    third = run / "episodes" / "step-000010.msgpack"
    third.write_bytes(third.read_bytes() + encode_frame(make_episode(6).model_dump(mode="json"))[:-3])
    result = read_run_episodes(run)
    assert [e.episode_id for e in result.episodes] == ["ep-1", "ep-2", "ep-3", "ep-4", "ep-5"]
    assert len(result.skipped) == 1 and "truncated" in result.skipped[0].reason


def test_read_run_episodes_without_episodes_folder(tmp_path):
    result = read_run_episodes(tmp_path)
    assert result.episodes == [] and result.skipped == []


# ----- no pickle anywhere --------------------------------------------------------------------
def test_records_module_does_not_import_pickle():
    tree = ast.parse(Path(records.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"pickle", "_pickle", "cloudpickle", "dill", "marshal", "shelve", "joblib", "torch"}


def test_fresh_import_loads_no_pickle():
    # Load records.py on its own (it has no relative imports), so the check covers exactly
    # what reading a log needs, whatever the package __init__ grows to import.
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('records', {records.__file__!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['records'] = m; spec.loader.exec_module(m)\n"
        "bad = [n for n in ('pickle', '_pickle', 'cloudpickle', 'dill', 'torch') if n in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == ""


def test_unencodable_episode_fails_before_writing_anything(tmp_path):
    # A lone surrogate is a valid Python str but not UTF-8: the append must fail
    # without leaving half a batch behind.
    path = tmp_path / "log.msgpack"
    log = EpisodeLog(path)
    log.append(make_episode(0))
    before = path.read_bytes()
    with pytest.raises(ValueError):  # UnicodeEncodeError today
        log.extend([make_episode(1), make_episode(2, text="bad \ud800 text")])
    assert path.read_bytes() == before
    assert [e.episode_id for e in read_episodes(path).episodes] == ["ep-0"]
