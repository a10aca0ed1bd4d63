"""`ddpbench report` through the built binary: a real CPU run of the built-in trainer reported end to
end (its tables equal the numbers in the documents it made), and the C++ side's argument checks and
exit statuses (one line and 2 for a bad path or trainer; the Python side's status passed through)."""
import json
import subprocess

import pytest

from report_docs import binary, tables
from ddpbench_report.render import fmt

BIN = binary()
pytestmark = pytest.mark.skipif(BIN is None, reason="build/ddpbench is not built (or set DDPBENCH_BINARY)")


def ddpbench(*args, timeout=300):
    return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_report_of_a_real_cpu_run(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for n in (1, 2):
        r = ddpbench("train", "--preset", "tiny", "--device", "cpu", "--nproc", n, "--steps", 3, "--warmup", 1,
                     "--out", docs / f"tiny-builtin-n{n}.json", "--runs-dir", tmp_path / "runs")
        assert r.returncode == 0, r.stderr[-2000:]
    r = ddpbench("report", docs, "--out", tmp_path / "report")
    assert r.returncode == 0, r.stderr
    assert "report.html" in r.stdout
    md = (tmp_path / "report" / "report.md").read_text()
    one, two = (json.loads((docs / f"tiny-builtin-n{n}.json").read_text()) for n in (1, 2))
    rows = {row["GPUs"]: row for row in tables(md)["All cells"]}
    for doc, n in ((one, "1"), (two, "2")):
        s = doc["summary"]
        assert rows[n]["trainer"] == "builtin"
        assert rows[n]["tokens/s per GPU"] == fmt(s["tokens_per_s_per_gpu"], "rate")
        assert rows[n]["step p50"] == fmt(s["step_time_p50_s"], "seconds")
        assert rows[n]["step p95"] == fmt(s["step_time_p95_s"], "seconds")
        assert rows[n]["final loss"] == fmt(s["final_loss"], "loss")
    scaling = two["summary"]["tokens_per_s_per_gpu"] / one["summary"]["tokens_per_s_per_gpu"]
    assert rows["2"]["scaling"] == fmt(scaling, "percent")
    for png in ("throughput.png", "loss.png", "memory.png"):
        assert (tmp_path / "report" / png).stat().st_size > 10_000


def test_help():
    r = ddpbench("report", "--help")
    assert r.returncode == 0 and "--baseline" in r.stdout and "--no-tensorboard" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["{tmp}/missing"], "{tmp}/missing: no such run folder or result document"),
    (["{tmp}", "--baseline", "nosuch"], "--baseline nosuch: neither an existing run folder or document nor a trainer"),
    (["{tmp}", "--candidate", "nosuch"], "--candidate nosuch: not a trainer"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, args, message):
    r = ddpbench("report", *[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == 2
    assert r.stderr.startswith("ddpbench report: " + message.format(tmp=tmp_path)), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_python_exit_status_passes_through(tmp_path):
    # An existing folder with no documents: the C++ side lets it pass, the report says why and exits 2.
    r = ddpbench("report", tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == f"ddpbench report: {tmp_path}: no ddpbench result document found"


def test_python_interpreter_from_environment(tmp_path):
    import os
    r = subprocess.run([BIN, "report", str(tmp_path)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "DDPBENCH_PYTHON": str(tmp_path / "no-such-python")})
    assert r.returncode == 1
    assert "cannot start" in r.stderr and "no-such-python" in r.stderr and "DDPBENCH_PYTHON" in r.stderr
