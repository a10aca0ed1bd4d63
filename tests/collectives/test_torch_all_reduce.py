"""bench/collectives/torch_all_reduce.py on the CPU (Gloo, 2 ranks), from a hand-made collectives run
folder: the sizes and settings come from the run, busbw uses all-reduce's factor, the ratio is
ddpbench's busbw over torch's, and the data check counts a spoiled element as wrong (exit 1)."""
import json
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "collectives", "torch_all_reduce.py")


def torch_has_gloo():
    try:
        import torch.distributed as dist
        return dist.is_available() and dist.is_gloo_available()
    except ImportError:
        return False


pytestmark = pytest.mark.skipif(not torch_has_gloo(), reason="torch with Gloo is not importable by python3")


def write_run(folder, rows, kind="collectives", collective="all_reduce"):
    (folder / "cells").mkdir(parents=True)
    cell = {"kind": "collectives", "cell": f"collectives/{collective}/fp32/in-place/n2", "status": {"state": "ok"},
            "config": {"backend": "gloo", "batch": 2, "collective": collective, "device": "cpu", "dtype": "fp32",
                       "mode": "in-place", "nnodes": 1, "nproc": 2, "repetitions": 2},
            "summary": {}, "rows": rows}
    (folder / "cells" / "c.json").write_text(json.dumps(cell))
    (folder / "run.json").write_text(json.dumps({"kind": kind, "cells": [{"file": "cells/c.json", "status": "ok"}]}))
    return folder


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=240)


ROWS = [{"bytes": 1024, "count": 256, "busbw_GBps": 0.5, "time_s": 2e-6},
        {"bytes": 4 << 20, "count": 1 << 20, "busbw_GBps": 2.0, "time_s": 2e-3}]


def test_times_the_runs_sizes_and_compares(tmp_path):
    folder = write_run(tmp_path / "coll", ROWS)
    r = run("--run", folder, "--out", tmp_path / "t.json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((tmp_path / "t.json").read_text())
    assert (doc["nproc"], doc["device"], doc["wrong_elements"]) == (2, "cpu", 0)
    rows = doc["series"][0]["rows"]
    assert [x["bytes"] for x in rows] == [1024, 4 << 20]
    for x in rows:
        assert x["time_s"] > 0 and x["wrong"] == 0
        assert x["algbw_GBps"] == pytest.approx(x["bytes"] / x["time_s"] / 1e9)
        assert x["busbw_GBps"] == pytest.approx(x["algbw_GBps"])  # 2(n-1)/n = 1 at 2 ranks
        assert x["ratio"] == pytest.approx(x["ddpbench_busbw_GBps"] / x["busbw_GBps"])
    assert doc["largest_abs_deviation_at_1MiB_and_up"] == pytest.approx(abs(rows[1]["ratio"] - 1))
    assert "within" in r.stdout


def test_a_spoiled_element_is_counted_wrong(tmp_path):
    folder = write_run(tmp_path / "coll", ROWS)
    r = run("--run", folder, "--out", tmp_path / "t.json", "--inject-error-rank", 1)
    assert r.returncode == 1, r.stdout + r.stderr
    doc = json.loads((tmp_path / "t.json").read_text())
    assert [x["wrong"] for x in doc["series"][0]["rows"]] == [1, 1]
    assert doc["wrong_elements"] == 2


@pytest.mark.parametrize("kind,collective,message", [("kernels", "all_reduce", "not a `ddpbench bench collectives` run"),
                                                     ("collectives", "all_gather", "no in-place all_reduce cell")])
def test_a_folder_that_is_not_a_collectives_run_is_refused(tmp_path, kind, collective, message):
    folder = write_run(tmp_path / "coll", ROWS, kind=kind, collective=collective)
    r = run("--run", folder, "--out", tmp_path / "t.json")
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
