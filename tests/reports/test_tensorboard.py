"""TensorBoard event files of `ddpbench report`, read back with tensorboard's own EventAccumulator:
one TensorBoard run per cell and repeat under <run>/tensorboard/<cell_id as a path>/r<repeat>/, with
the per-step figures of the documents."""
import pytest

from report_docs import cell_doc, tables_only, write_run

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="the tensorboard package is not installed (scripts/setup installs it)")
from tensorboard.util import tensor_util  # noqa: E402

PROFILE = {"ranks": [{"rank": r, "steps": [{"index": i, "exposed_comm_ns": 1e6 * (i + 1) * (r + 1), "compute_ns": 5e6,
                                            "idle_ns": 1e5} for i in range(3)]} for r in range(2)]}


def read(folder):
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    return {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"]}


def test_scalars_read_back(tmp_path):
    a = cell_doc("w", "builtin", 2, 1000, 0.1, [5.0, 4.0, 3.0], repeat=1, cell_id="w/builtin/n2/b4/g1/s64#1a2b3c4d",
                 profile=PROFILE)
    b = cell_doc("w", "builtin", 2, 1100, 0.1, [5.0, 4.1, 3.1], repeat=2, cell_id="w/builtin/n2/b4/g1/s64#1a2b3c4d")
    skipped = cell_doc("w", "hf", 2, state="skipped", reason="no transformers", cell_id="w/hf/n2/b4/g1/s64#2b3c4d5e")
    run = write_run(tmp_path / "20261129-000000-beef", [a, b, skipped])
    stale = run / "tensorboard" / "old"
    stale.mkdir(parents=True)
    assert tables_only(run) == 0
    root = run / "tensorboard" / "w" / "builtin" / "n2" / "b4" / "g1" / "s64-1a2b3c4d"
    assert sorted(p.name for p in root.iterdir()) == ["r1", "r2"]
    assert not stale.exists()                                        # replaced, not appended to
    assert not (run / "tensorboard" / "w" / "hf").exists()           # a skipped cell has no steps
    got = read(root / "r1")
    for tag, key in (("loss", "loss"), ("step_time_s", "step_time_s"), ("grad_norm", "grad_norm")):
        assert [s for s, _ in got[tag]] == [0, 1, 2]
        assert [v for _, v in got[tag]] == pytest.approx([s[key] for s in a["steps"]], rel=1e-6)
    assert [v for _, v in got["tokens_per_s"]] == pytest.approx([s["tokens"] / s["step_time_s"] for s in a["steps"]], rel=1e-6)
    assert [v for _, v in got["tokens_per_s_per_gpu"]] == pytest.approx(
        [s["tokens"] / s["step_time_s"] / 2 for s in a["steps"]], rel=1e-6)
    assert got["memory/peak_allocated_GiB"] == [(2, pytest.approx(1.0))]  # the run's peak, at its last step
    # Exposed communication per step: the mean over the two ranks, in ms: (i+1) * (1 + 2) / 2.
    assert [v for _, v in got["profile/exposed_comm_ms"]] == pytest.approx([1.5, 3.0, 4.5])
    assert [v for _, v in read(root / "r2")["loss"]] == pytest.approx([5.0, 4.1, 3.1])
    assert "profile/exposed_comm_ms" not in read(root / "r2")


def test_no_tensorboard_flag(tmp_path):
    run = write_run(tmp_path / "run", [cell_doc("w", "builtin", 1)])
    assert tables_only(run, "--no-tensorboard") == 0
    assert not (run / "tensorboard").exists()


def test_plain_folder_writes_under_the_report(tmp_path):
    """A folder of documents is not a run folder (bench/results is committed): event files go to --out."""
    (tmp_path / "docs").mkdir()
    import json
    (tmp_path / "docs" / "w-builtin-n1.json").write_text(json.dumps(cell_doc("w", "builtin", 1)))
    assert tables_only(tmp_path / "docs", "--out", tmp_path / "out") == 0
    assert not (tmp_path / "docs" / "tensorboard").exists()
    assert read(tmp_path / "out" / "tensorboard" / "w" / "builtin" / "n1" / "b4" / "g1" / "s64" / "r1")["loss"]
