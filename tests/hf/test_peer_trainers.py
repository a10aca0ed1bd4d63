"""CPU tests of the peer trainers' adapter (harness/hf/peer_trainers.py): the Hugging Face Trainer as
users configure it, under ddpbench's launcher environment, on ddpbench's equal-work inputs.

The loss rule through transformers.Trainer: 2 ranks x 3 micro-batches must give the losses and
gradient norms of 1 rank with one micro-batch of 12, and step 0 must be Transformers' own mean token
loss over the global batch; the Trainer's own settings for the two wrong variants users hit must not.
"""

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the peer trainers need torch")
pytest.importorskip("transformers", reason="the hf trainer needs transformers (scripts/setup installs it)")
pytest.importorskip("peft", reason="the hf trainer needs peft (scripts/setup installs it)")
pytest.importorskip("accelerate", reason="the hf trainer needs accelerate (scripts/setup installs it)")

from test_hf_loop import b0_reference, check_schema, config, launch, workdir  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "harness" / "hf" / "peer_trainers.py"
sys.path.insert(0, str(SCRIPT.parent))
import peer_trainers  # noqa: E402


def test_dataset_serves_each_rank_the_builtin_trainers_rows():
    """accelerate gives rank r batch k*W + r; position ((s*G + m)*W + r)*mb + i must be global-batch
    row (r*G + m)*mb + i of step s, the row the built-in trainer reads there."""
    ds = peer_trainers.EqualWorkDataset(data=None, vocab=10, steps=2, world=2, grad_accum=3, micro_batch=2, seq_len=8)
    assert len(ds) == 2 * 12
    seen = {}
    for position in range(len(ds)):
        batch, i = divmod(position, 2)
        k, rank = divmod(batch, 2)  # rank's k-th batch
        step, micro = divmod(k, 3)
        assert ds.locate(position) == (step, (rank * 3 + micro) * 2 + i)
        seen.setdefault(step, set()).add(ds.locate(position)[1])
    assert seen == {0: set(range(12)), 1: set(range(12))}  # every row of each step exactly once


def test_an_aa_twins_split_serves_each_step_the_same_rows():
    """A suite's A/A twin (half the micro-batch, twice the accumulation) is equal work: on one rank, or
    on each of W, every optimizer step reads the cell's global-batch rows in the same order."""
    for world in (1, 2):
        cell = peer_trainers.EqualWorkDataset(data=None, vocab=10, steps=3, world=world, grad_accum=1, micro_batch=4, seq_len=8)
        twin = peer_trainers.EqualWorkDataset(data=None, vocab=10, steps=3, world=world, grad_accum=2, micro_batch=2, seq_len=8)
        assert twin.global_batch == cell.global_batch and len(twin) == len(cell)
        for step in range(3):
            positions = range(step * cell.global_batch, (step + 1) * cell.global_batch)
            rows = lambda ds: sorted(ds.locate(p) for p in positions)  # noqa: E731
            assert rows(twin) == rows(cell) == [(step, r) for r in range(cell.global_batch)]
            if world == 1:  # one rank reads them in row order under either split
                assert [twin.locate(p) for p in positions] == [cell.locate(p) for p in positions]


@pytest.mark.parametrize("mode,checkpoint", [("full", "base"), ("lora", "lora")])
def test_trainer_two_ranks_match_one_rank(workdir, mode, checkpoint):
    two = config(workdir, checkpoint, mode, nproc=2, micro_batch=2, grad_accum=3, trainer="hf", lr_warmup=2)
    one = config(workdir, checkpoint, mode, nproc=1, micro_batch=12, grad_accum=1, trainer="hf", lr_warmup=2)
    codes2, reports2, out2 = launch(workdir / f"trainer-{mode}-2", two, script=SCRIPT)
    codes1, reports1, out1 = launch(workdir / f"trainer-{mode}-1", one, script=SCRIPT)
    assert codes2 == [0, 0], [o[1][-3000:] for o in out2]
    assert codes1 == [0], out1[0][1][-3000:]
    for report in reports2 + reports1:
        check_schema(report)
        assert report["status"] == "ok" and report["phase"] == "done"
        assert report["packages"]["transformers"] and report["packages"]["torch"]
        assert len(report["steps"]) == 3
        assert report["optimizer_state_bytes"] == 8 * report["trainable_parameters"]  # fp32 moments
    lines = [line for line in out2[0][0].splitlines() if line.startswith("step ")]
    assert len(lines) == 3 and lines[0].startswith("step    1/3 (warmup) | loss ")
    for step in range(3):
        a = [r["steps"][step] for r in reports2]
        b = reports1[0]["steps"][step]
        assert sum(s["tokens"] for s in a) == b["tokens"]
        assert sum(s["predicted_tokens"] for s in a) == b["global_predicted_tokens"] == a[0]["global_predicted_tokens"]
        assert a[0]["loss"] == pytest.approx(a[1]["loss"], rel=1e-12)
        assert a[0]["loss"] == pytest.approx(b["loss"], rel=1e-5), (mode, step)
        assert a[0]["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4), (mode, step)
        assert b["step_time_s"] > 0 and b["mem_allocated_peak"] > 0
    assert b0_reference(workdir, checkpoint) == pytest.approx(reports1[0]["steps"][0]["loss"], rel=1e-5)
    assert reports1[0]["steps"][2]["loss"] != reports1[0]["steps"][0]["loss"]


@pytest.mark.parametrize("rule", ["local-tokens", "mean-of-micro-means"])
def test_trainer_settings_of_the_wrong_rules_break_the_equality(workdir, rule):
    """average_tokens_across_devices=False (each rank's own count) and a model without loss kwargs
    (the Trainer before 4.46) give other gradients for the same global batch: what check-loss catches."""
    two = config(workdir, "base", "full", nproc=2, micro_batch=2, grad_accum=3, trainer="hf", loss_norm=rule)
    one = config(workdir, "base", "full", nproc=1, micro_batch=12, grad_accum=1, trainer="hf", loss_norm=rule)
    codes2, reports2, out2 = launch(workdir / f"wrong-{rule}-2", two, script=SCRIPT)
    codes1, reports1, out1 = launch(workdir / f"wrong-{rule}-1", one, script=SCRIPT)
    assert codes2 == [0, 0] and codes1 == [0], (out2[0][1][-2000:], out1[0][1][-2000:])
    norm2, norm1 = reports2[0]["steps"][0]["grad_norm"], reports1[0]["steps"][0]["grad_norm"]
    assert abs(norm2 - norm1) / norm1 > 1e-3, (rule, norm2, norm1)


def test_trainer_fails_the_run_at_the_first_non_finite_step(workdir):
    """--lr 1e308 drives the weights to inf after one step; the next step's loss is NaN: the rank
    must fail in phase "step N" (exit 1), keeping the steps before, not report NaN figures as ok."""
    cfg = config(workdir, "base", "full", nproc=1, micro_batch=2, grad_accum=1, trainer="hf", lr=1e308, steps=3)
    codes, reports, out = launch(workdir / "diverged", cfg, script=SCRIPT)
    assert codes == [1], out[0][1][-2000:]
    report = reports[0]
    assert report["status"] == "failed", report
    assert "non-finite loss" in report["error"], report["error"]
    step = int(report["phase"].split()[1]) if report["phase"].startswith("step ") else None
    assert step is not None and f"at step {step} " in report["error"], (report["phase"], report["error"])
    assert len(report["steps"]) == step + 1  # every step up to the failing one is kept
    assert report["failed_at"] > 0  # when, so that of several failed ranks the first is named


def test_check_packages_names_what_is_missing(monkeypatch, capsys):
    real = peer_trainers.importlib.util.find_spec
    monkeypatch.setattr(peer_trainers.importlib.util, "find_spec",
                        lambda name, *a: None if name == "liger_kernel" else real(name, *a))
    assert peer_trainers.main(["--check-packages", "liger"]) == peer_trainers.EXIT_MISSING_PACKAGES
    assert "liger-kernel" in capsys.readouterr().out
    assert peer_trainers.main(["--check-packages", "hf"]) == 0
    assert peer_trainers.main(["--check-packages", "nonsense"]) == 2
