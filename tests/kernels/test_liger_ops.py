"""bench/kernels/liger_ops.py on the CPU: its arguments, the order in which a timed call is queued
(put back what Liger writes in place, flush L2, then the events around the call alone), and that
putting tensors back leaves autograd's saved tensors usable. The timing itself needs a GPU
(scripts/gpu-kernels)."""
import importlib.util
import pathlib

import pytest
import torch

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "bench" / "kernels" / "liger_ops.py"
spec = importlib.util.spec_from_file_location("liger_ops", SCRIPT)
liger_ops = importlib.util.module_from_spec(spec)
spec.loader.exec_module(liger_ops)


def test_l2_flush_is_on_by_default_and_takes_0_or_1():
    assert liger_ops.parse_args(["--shapes", "s.json", "--out", "o.json"]).l2_flush == 1
    assert liger_ops.parse_args(["--shapes", "s.json", "--out", "o.json", "--l2-flush", "0"]).l2_flush == 0


@pytest.mark.parametrize("bad", [["--l2-flush", "2"], ["--l2-flush", "yes"], ["--batch", "0"], ["--iterations", "-1"]])
def test_bad_arguments_exit_2_before_anything_is_imported(bad, capsys):
    with pytest.raises(SystemExit) as e:
        liger_ops.main(["--shapes", "s.json", "--out", "o.json", *bad])
    assert e.value.code == 2
    assert bad[0] in capsys.readouterr().err


def test_flush_is_twice_the_l2_and_256_mib_at_least():
    assert liger_ops.flush_bytes(50 << 20) == 256 << 20
    assert liger_ops.flush_bytes(200 << 20) == 400 << 20
    flush = liger_ops.L2Flush(torch, 8 << 20, device="cpu")
    assert flush.nbytes == flush.buffer.numel() * flush.buffer.element_size() == 8 << 20
    flush.buffer.fill_(7)
    flush()  # writes the whole buffer
    assert int(flush.buffer.abs().sum()) == 0


class FakeTorch:
    """Enough of torch for time_calls: a log of what is queued, in order; event pairs that report
    the given milliseconds."""

    def __init__(self, ms_per_call):
        self.log, self.ms, self.cuda = [], list(ms_per_call), self
        self.recorded = 0

    def synchronize(self):
        self.log.append("sync")

    def _sleep(self, cycles):
        self.log.append("spin")

    def Event(self, enable_timing):
        assert enable_timing
        return FakeEvent(self)


class FakeEvent:
    def __init__(self, torch):
        self.torch, self.index = torch, None

    def record(self):
        self.index = self.torch.recorded
        self.torch.recorded += 1
        self.torch.log.append("record")

    def synchronize(self):
        self.torch.log.append("wait")

    def elapsed_time(self, stop):
        assert stop.index == self.index + 1
        return self.torch.ms[self.index // 2 % len(self.torch.ms)]


def test_each_call_is_timed_alone_with_the_flush_and_the_restore_outside_its_events():
    torch_ = FakeTorch([1.0, 2.0, 3.0])
    times = liger_ops.time_calls(torch_, lambda: torch_.log.append("call"), batch=3, iterations=2,
                                 flush=lambda: torch_.log.append("flush"), restore=lambda: torch_.log.append("restore"))
    # Warm-up: the batch's calls, each on restored inputs, unflushed and untimed.
    warm = ["restore", "call"] * 3 + ["sync"]
    timed = ["spin"] + ["restore", "flush", "record", "call", "record"] * 3 + ["wait"]
    assert torch_.log == warm + timed * 2
    assert times == pytest.approx([2e-3, 2e-3])  # the mean of each call's own interval


def test_without_flush_or_restore_calls_follow_each_other_between_their_events():
    torch_ = FakeTorch([4.0])
    times = liger_ops.time_calls(torch_, lambda: torch_.log.append("call"), batch=2, iterations=1)
    assert torch_.log == ["call", "call", "sync", "spin", "record", "call", "record", "record", "call", "record", "wait"]
    assert times == pytest.approx([4e-3])


class OverwritesItsInputs(torch.autograd.Function):
    """As Liger's SwiGLU: backward writes the gradients over the saved inputs, untracked (Triton's
    stores do not move autograd's version counters; `.data` stands in for them here)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, dc):
        a, b = ctx.saved_tensors
        da, db = dc * b, dc * a
        a.data.copy_(da)
        b.data.copy_(db)
        return a, b


def test_restore_puts_back_what_an_op_overwrote_and_keeps_the_graph_usable():
    a = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = torch.tensor([4.0, 5.0, 6.0], requires_grad=True)
    out = OverwritesItsInputs.apply(a, b)
    dc = torch.ones(3)
    restore = liger_ops.Restore(torch, [a, b])

    def backward():
        return [g.clone() for g in torch.autograd.grad(out, [a, b], dc, retain_graph=True)]

    first = backward()
    assert torch.equal(first[0], torch.tensor([4.0, 5.0, 6.0]))
    assert not torch.equal(a.detach(), torch.tensor([1.0, 2.0, 3.0]))  # overwritten by the op
    drifted = backward()
    assert not torch.equal(drifted[0], first[0])  # a second call without restoring runs on other data
    restore()
    assert torch.equal(backward()[0], first[0])
    restore()
    # A tracked copy would have broken the retained graph: what Restore's use of .data avoids.
    with torch.no_grad():
        a.copy_(torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        backward()
