#!/usr/bin/env python3
"""Liger-Kernel's versions of the kernel registry's ops, timed as bench_kernels times its own: the
shapes and cost models come from `bench_kernels --describe` (so both sides agree on sizes and bytes),
CUDA events around each call of a batch queued behind a spin kernel (so Python's launch cost stays
out of the GPU time, as bench_kernels does), forward and backward (backward on a retained graph),
bf16. L2-cold by default, as bench_kernels: before each call, outside its events, a scratch buffer of
twice the L2 cache (256 MiB at least) is written; the tensors a Liger op writes in place (RoPE's q and k
in forward, their gradients in backward, RMSNorm's and SwiGLU's backward) get their first values
back before each call, outside the timing too, so that no call runs on data an earlier call rotated
or overwrote. Writes Google Benchmark's JSON layout with entries named op/preset/pass/liger (each with
the l2_flush counter, 1 or 0), which `ddpbench bench kernels` merges into its run. Exit 3 when
liger_kernel does not import.

Usage: liger_ops.py --shapes shapes.json --out liger.json [--repetitions 5 --iterations 10 --batch 10 --l2-flush 1]
"""
import argparse
import json
import statistics
import sys

SPIN_CYCLES = 10_000_000  # as bench_kernels: about 5 ms, longer than queueing a batch takes


class Case:
    """One op as Liger runs it: the inputs that get gradients, the forward callable, and the tensors
    it writes in place: in forward (`writes_fwd`), in backward (`writes_bwd`), and whether backward
    overwrites the incoming gradients (`writes_grads`)."""

    def __init__(self, wrt, forward, writes_fwd=(), writes_bwd=(), writes_grads=False):
        self.wrt, self.forward = wrt, forward
        self.writes_fwd, self.writes_bwd, self.writes_grads = list(writes_fwd), list(writes_bwd), writes_grads


class Restore:
    """Puts back the values `tensors` held when this was made. Written through `.data`, so that
    autograd's version counters do not move: Liger's Triton kernels overwrite tensors that autograd
    saved (SwiGLU's inputs) without it noticing, and a tracked copy would fail the retained graph's
    next backward."""

    def __init__(self, torch, tensors):
        self.torch = torch
        self.pairs = [(t, t.detach().clone()) for t in tensors]

    def __call__(self):
        with self.torch.no_grad():
            for t, first in self.pairs:
                t.data.copy_(first)


class L2Flush:
    """As bench_kernels' L2Flush (and Triton's do_bench): writes a buffer of `nbytes`, which evicts
    what earlier work left in L2 (see bench/kernels/main.cpp for what its dirty lines charge)."""

    def __init__(self, torch, nbytes, device="cuda"):
        self.buffer = torch.empty(nbytes, dtype=torch.int8, device=device)
        self.nbytes = nbytes

    def __call__(self):
        self.buffer.zero_()


def flush_bytes(l2_cache_bytes):
    """Twice the L2 cache, 256 MiB at least (as bench_kernels)."""
    return max(2 * l2_cache_bytes, 256 << 20)


def make_case(op, s, torch):
    """The Case of one registry op, or None if Liger has none."""
    dev, bf16 = "cuda", torch.bfloat16
    N = s["tokens"]

    def rnd(*shape, grad=True):
        return torch.randn(*shape, device=dev, dtype=bf16).requires_grad_(grad)

    if op == "rms_norm":
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction
        x, w = rnd(N, s["hidden"]), (1 + 0.1 * torch.randn(s["hidden"], device=dev, dtype=bf16)).requires_grad_()
        # As LigerRMSNorm's defaults for Llama: offset 0, casting "llama", in place (backward writes dX over dY).
        return Case([x, w], lambda: (LigerRMSNormFunction.apply(x, w, 1e-5, 0.0, "llama", True),), writes_grads=True)
    if op == "rope_qk":
        from liger_kernel.transformers.rope import liger_rotary_pos_emb
        T = s["seq_len"] if N % s["seq_len"] == 0 else N
        B, D = N // T, s["head_dim"]
        # As Hugging Face hands them over: the projections viewed [B, T, H, D], transposed to [B, H, T, D].
        q, k = rnd(B, T, s["heads"], D), rnd(B, T, s["kv_heads"], D)
        inv = 1.0 / (10000 ** (torch.arange(0, D, 2, device=dev, dtype=torch.float32) / D))
        emb = torch.cat([torch.outer(torch.arange(T, device=dev, dtype=torch.float32), inv)] * 2, -1)
        cos, sin = emb.cos().to(bf16)[None], emb.sin().to(bf16)[None]
        # Liger rotates q and k in place (contiguous once transposed back), and in backward their gradients.
        return Case([q, k], lambda: liger_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin),
                    writes_fwd=[q, k], writes_grads=True)
    if op == "swiglu":
        from liger_kernel.ops.swiglu import LigerSiLUMulFunction
        g, u = rnd(N, s["intermediate"]), rnd(N, s["intermediate"])
        # Backward writes the gradients of gate and up over the saved gate and up.
        return Case([g, u], lambda: (LigerSiLUMulFunction.apply(g, u),), writes_bwd=[g, u])
    if op == "linear_cross_entropy":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
        h, w = rnd(N, s["hidden"]), (0.02 * torch.randn(s["vocab"], s["hidden"], device=dev, dtype=bf16)).requires_grad_()
        labels = torch.randint(0, s["vocab"], (N,), device=dev)
        loss = LigerFusedLinearCrossEntropyLoss(reduction="sum")
        # Its backward scales the gradients forward stored, in place: they cannot be put back without
        # forward, and the scaling takes the same time whatever their values.
        return Case([h, w], lambda: (loss(w, h, labels),))
    return None


def time_calls(torch, call, batch, iterations, flush=None, restore=None):
    """Mean seconds per call of each timed interval (after one warm-up batch): each call between its
    own pair of events, with `restore` and then `flush` (where given) queued before its start event."""
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(batch)]
    for _ in range(batch):
        if restore:
            restore()
        call()
    torch.cuda.synchronize()
    times = []
    for _ in range(iterations):
        torch.cuda._sleep(SPIN_CYCLES)
        for start, stop in events:
            if restore:
                restore()
            if flush:
                flush()
            start.record()
            call()
            stop.record()
        events[-1][1].synchronize()
        times.append(sum(start.elapsed_time(stop) for start, stop in events) * 1e-3 / batch)
    return times


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--repetitions", type=positive, default=5)
    p.add_argument("--iterations", type=positive, default=10)
    p.add_argument("--batch", type=positive, default=10, help="calls queued behind one spin kernel, each timed alone")
    p.add_argument("--l2-flush", type=int, choices=(0, 1), default=1,
                   help="1: write a buffer of twice the L2 cache before each timed call (L2-cold, as bench_kernels); 0: L2 warm")
    return p.parse_args(argv)


def positive(text):
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive count")
    return n


def main(argv=None):
    a = parse_args(argv)
    try:
        import torch
        import liger_kernel  # noqa: F401
        from importlib.metadata import version
        liger_version = version("liger-kernel")
    except Exception as e:  # not installed, or it fails to import on this host
        print(f"liger_ops: liger_kernel does not import: {e}", file=sys.stderr)
        return 3
    if not torch.cuda.is_available():
        print("liger_ops: no CUDA GPU visible", file=sys.stderr)
        return 3
    with open(a.shapes, encoding="utf-8") as f:
        shapes = json.load(f)
    l2_cache_bytes = torch.cuda.get_device_properties(0).L2_cache_size
    # Allocated before any op's inputs, so that the peaks each pass reports leave it out.
    flush = L2Flush(torch, flush_bytes(l2_cache_bytes)) if a.l2_flush else None
    entries = []
    for spec in shapes["ops"]:
        op, preset, s = spec["op"], spec["preset"], spec["shape"]
        try:
            case = make_case(op, s, torch)
        except Exception as e:
            print(f"liger_ops: {op}/{preset}: {e}", file=sys.stderr)
            continue
        if case is None:
            continue
        wrt, forward = case.wrt, case.forward
        for pass_ in ("fwd", "bwd"):
            name = f"{op}/{preset}/{pass_}/liger"
            nbytes = spec["backward_bytes" if pass_ == "bwd" else "forward_bytes"]
            flops = spec["backward_flops" if pass_ == "bwd" else "forward_flops"]
            outputs = forward() if pass_ == "bwd" else None
            grads = [torch.randn_like(o) for o in outputs] if outputs else None
            if pass_ == "bwd":
                call = lambda: torch.autograd.grad(outputs, wrt, grads, retain_graph=True, allow_unused=True)
                written = case.writes_bwd + (grads if case.writes_grads else [])
            else:
                call = forward
                written = case.writes_fwd
            restore = Restore(torch, written) if written else None
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            reps = []
            for r in range(a.repetitions):
                t = statistics.fmean(time_calls(torch, call, a.batch, a.iterations, flush, restore))
                reps.append(t)
                entries.append({"name": name, "run_name": name, "run_type": "iteration", "repetitions": a.repetitions,
                                "repetition_index": r, "threads": 1, "iterations": a.iterations,
                                "real_time": t * 1e6, "cpu_time": t * 1e6, "time_unit": "us",
                                "model_bytes": nbytes, "bytes_per_second": nbytes / t, "tflops": flops / t / 1e12,
                                "peak_extra_bytes": float(torch.cuda.max_memory_allocated() - base),
                                "l2_flush": a.l2_flush})
            med = statistics.median(reps)
            entries.append({"name": name + "_median", "run_name": name, "run_type": "aggregate", "aggregate_name": "median",
                            "repetitions": a.repetitions, "threads": 1, "iterations": a.repetitions,
                            "real_time": med * 1e6, "cpu_time": med * 1e6, "time_unit": "us",
                            "bytes_per_second": nbytes / med, "tflops": flops / med / 1e12,
                            "peak_extra_bytes": float(torch.cuda.max_memory_allocated() - base),
                            "l2_flush": a.l2_flush})
            print(f"{name}: {med * 1e3:.3f} ms, {nbytes / med / 1e9:.0f} GB/s", flush=True)
            del outputs, grads, restore
        del case, wrt, forward
        torch.cuda.empty_cache()
    doc = {"context": {"executable": "bench/kernels/liger_ops.py", "liger_kernel": liger_version,
                       "torch": torch.__version__, "device": torch.cuda.get_device_name(0),
                       # As bench_kernels writes them (Google Benchmark's custom context holds strings).
                       "l2_flush": "true" if a.l2_flush else "false", "l2_cache_bytes": str(l2_cache_bytes),
                       "l2_flush_bytes": str(flush.nbytes if flush else 0)},
           "benchmarks": entries}
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
