"""run_analysis end to end on synthetic run folders: the summary, the self-contained report,
log loading edge cases, and the report in a real headless browser."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from multiagent_rl.analysis import (
    RunError,
    load_run,
    read_metrics,
    run_analysis,
    write_synthetic_debate_run,
)
from multiagent_rl.records import EpisodeLog

HOSTILE = "<script>alert('x')</script> see http://evil.example/a.png & <img src=https://evil.example/b.png>"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    good = write_synthetic_debate_run(root / "good", steps=9, episodes_per_step=6, eval_every=3, eval_episodes=3)
    slow = write_synthetic_debate_run(root / "slow", steps=9, episodes_per_step=6, seed=1, learning_speed=0.3)
    # Model text that would break or leak out of the page if it were not escaped.
    episode = load_run(good).episodes[-1].model_copy(deep=True)
    episode.turns[0].message.text = HOSTILE
    episode.task.prompt = "Is 1 < 2 & 3 > 2?"
    episode.step, episode.split = 10, "train"  # first of the last step: a late transcript
    EpisodeLog(good / "episodes" / "step-000010.msgpack", fsync=False).append(episode)
    return good, slow


@pytest.fixture(scope="module")
def report(runs) -> tuple[str, Path]:
    good, slow = runs
    return run_analysis(good, compare=[slow], progress=False)


def test_summary_text_compares_runs(report, runs):
    text, path = report
    assert path == runs[0] / "report.html"
    header = text.splitlines()[0]
    assert "metric" in header and "good" in header and "slow" in header
    assert "train team reward, early → late" in text
    assert "strongest adoption edge" in text


def test_report_is_self_contained(report):
    html = report[1].read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    images = re.findall(r'<img[^>]*src="([^"]*)"', html)
    assert len(images) >= 6  # rewards, messages, graph, influence, debate, language
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"https?://", html), "the report must not reference any URL"
    assert "<script" not in html.lower() and "@import" not in html and "url(" not in html
    for section in ("Team reward", "Messages", "Who listens to whom", "Debate dynamics", "Sample transcripts"):
        assert section in html


def test_model_text_is_escaped(report):
    html = report[1].read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "Is 1 &lt; 2 &amp; 3 &gt; 2?" in html
    assert "evil.example" in html  # shown as text, never as a link or image source


def test_out_path_progress_and_single_run(runs, tmp_path, capsys):
    text, path = run_analysis(runs[1], out=tmp_path / "sub" / "r.html", progress=True)
    assert path == tmp_path / "sub" / "r.html" and path.is_file()
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert "slow" in text.splitlines()[0]
    assert "analysing slow" in capsys.readouterr().err


def test_run_without_metrics_and_with_a_truncated_log(tmp_path):
    run = write_synthetic_debate_run(tmp_path / "cut", steps=4, episodes_per_step=3, metrics=False)
    log = run / "episodes" / "step-000004.msgpack"
    data = log.read_bytes()
    log.write_bytes(data[: len(data) - 25])  # a crash mid-write
    text, path = run_analysis(run, progress=False)
    assert "log problems" in text and "truncated" in text
    assert "Notes on the logs" in path.read_text(encoding="utf-8")


def test_bad_run_folders(tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        run_analysis(tmp_path / "missing", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="no episodes"):
        run_analysis(tmp_path / "empty", progress=False)


def test_metrics_tolerate_a_cut_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "reward/team_mean": 0.5}\n\n[1, 2]\n{"step": 2, "rew', encoding="utf-8")
    metrics, notes = read_metrics(path)
    assert metrics == [{"step": 1, "reward/team_mean": 0.5}]
    assert len(notes) == 2 and "line 4" in notes[1]
    assert read_metrics(tmp_path / "absent.jsonl") == ([], [])


def test_metrics_only_run_still_reports(tmp_path):
    run = tmp_path / "metrics-only"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "reward/team_mean": 0.2}\n{"step": 2, "reward/team_mean": 0.4}\n')
    text, path = run_analysis(run, progress=False)
    assert path.is_file() and "episodes (train / eval)" in text


# ----- the report in a real browser ---------------------------------------------------------
def _browser() -> str | None:
    if os.path.exists("/usr/bin/chromium"):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_in_headless_chromium(report, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no headless browser (chromium) on this machine; install Debian's chromium to run this test")
    from matplotlib.image import imread

    url = report[1].resolve().as_uri()
    shot = tmp_path / "report.png"
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", "--hide-scrollbars",
    ]
    done = subprocess.run([browser, *flags, "--window-size=1280,2400", f"--screenshot={shot}", url],
                          capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"chromium wrote no screenshot:\n{done.stderr[-3000:]}"
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    # The page has no scripts, so any console message at all (errors, failed loads) is a bug.
    console = [line for line in (done.stderr + dom.stderr).splitlines() if ":CONSOLE" in line]
    assert not console, "console messages:\n" + "\n".join(console)
    assert "Sample transcripts" in dom.stdout and dom.stdout.count("data:image/png;base64,") >= 6

    pixels = imread(shot)  # (H, W, 3 or 4) floats in [0, 1]
    assert shot.stat().st_size > 50_000 and pixels.shape[0] >= 2000 and pixels.shape[1] >= 1200
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05, "screenshot looks blank"
    # The plots are drawn in saturated colours: a page of only text and tables has almost none.
    saturated = (rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.35
    assert saturated.mean() > 0.01, "no plots visible in the screenshot"
    keep = os.environ.get("MRL_REPORT_SCREENSHOT")
    if keep:  # for looking at the page by eye: MRL_REPORT_SCREENSHOT=/tmp/report.png pytest ...
        shutil.copy(shot, keep)


def test_signalling_runs_get_the_signalling_section(episode, tmp_path):
    codes = {("red", "square"): "ra sq", ("red", "circle"): "ra ci", ("blue", "square"): "bl sq", ("blue", "circle"): "bl ci"}
    eps = [
        episode([("speaker", 0, code, None, ["listener"]), ("listener", 1, f"{c} {s}", f"{c} {s}", [])],
                meta={"target": {"colour": c, "shape": s}, "candidates": ["x", "y"]}, step=step, scenario="signalling", answer=f"{c} {s}",
                team_answer=f"{c} {s}", rewards={"speaker": 1.0, "listener": 1.0})
        for step in (1, 2, 3) for (c, s), code in codes.items()
    ]
    held_out = []
    for step, speaks in ((0, lambda c, s: "The target is"), (3, lambda c, s: codes[c, s])):
        for c, s in codes:
            held_out.append(episode(
                [("speaker", 0, speaks(c, s), None, ["listener"]), ("listener", 1, f"{c} {s}", f"{c} {s}", [])],
                meta={"target": {"colour": c, "shape": s}}, step=step, split="eval", scenario="signalling", answer=f"{c} {s}"))
            held_out[-1].task.key = f"{c} {s}"  # the same held-out tasks at both evaluations
    EpisodeLog(tmp_path / "sig" / "episodes" / "all.msgpack", fsync=False).extend(eps + held_out)
    _, path = run_analysis(tmp_path / "sig", progress=False)
    html = path.read_text(encoding="utf-8")
    assert "Signalling structure" in html and "target.colour,target.shape" in html
    assert "<td class=\"num\">1</td>" in html  # rho = 1 and normalised MI = 1 for this code
    assert 'alt="code structure over training"' in html
    assert "before and after training" in html and "The target is" in html  # the untrained speaker's message
    assert "early and late in training" in html and "“ra sq” ×1" in html
    assert "Structure against chance" in html and "<th>posdis_shuffled</th>" in html and "<th>bosdis</th>" in html
    assert "Lexicon" in html and "<td>ra</td>" in html  # red -> "ra" at position 0


def test_play_log_without_steps_or_turns(episode, tmp_path):
    eps = [episode([("a", 0, "3"), ("b", 0, "4"), ("a", 1, "4"), ("b", 1, "4")], split="play", answer="4", team_answer="4")
           for _ in range(3)]
    eps.append(episode([], split="play", agents=["a", "b"]))  # an episode cut before anyone spoke
    EpisodeLog(tmp_path / "play" / "episodes" / "play.msgpack", fsync=False).extend(eps)
    text, path = run_analysis(tmp_path / "play", progress=False)
    assert "team answer correct, early → late" in text
    html = path.read_text(encoding="utf-8")
    assert "Round 0" in html and "step –" in html  # transcripts in log order, without steps
