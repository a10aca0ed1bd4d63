#!/usr/bin/env python3
"""Liger-Kernel's versions of the kernel registry's ops, timed as bench_kernels times its own: the
shapes and cost models come from `bench_kernels --describe` (so both sides agree on sizes and bytes),
CUDA events around batches of calls queued behind a spin kernel (so Python's launch cost stays out
of the GPU time, as bench_kernels does), forward and backward (backward on a retained graph), bf16.
Writes Google Benchmark's JSON layout with entries named op/preset/pass/liger, which
`ddpbench bench kernels` merges into its run. Exit 3 when liger_kernel does not import.

Usage: liger_ops.py --shapes shapes.json --out liger.json [--repetitions 5 --iterations 10 --batch 10]
"""
import argparse
import json
import statistics
import sys

SPIN_CYCLES = 10_000_000  # as bench_kernels: about 5 ms, longer than queueing a batch takes


def make_case(op, s, torch):
    """(inputs that get gradients, forward callable, None) for one registry op, or None if Liger has none."""
    dev, bf16 = "cuda", torch.bfloat16
    N = s["tokens"]

    def rnd(*shape, grad=True):
        return torch.randn(*shape, device=dev, dtype=bf16).requires_grad_(grad)

    if op == "rms_norm":
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction
        x, w = rnd(N, s["hidden"]), (1 + 0.1 * torch.randn(s["hidden"], device=dev, dtype=bf16)).requires_grad_()
        # As LigerRMSNorm's defaults for Llama: offset 0, casting "llama", in place.
        return [x, w], lambda: (LigerRMSNormFunction.apply(x, w, 1e-5, 0.0, "llama", True),)
    if op == "rope_qk":
        from liger_kernel.transformers.rope import liger_rotary_pos_emb
        T = s["seq_len"] if N % s["seq_len"] == 0 else N
        B, D = N // T, s["head_dim"]
        # As Hugging Face hands them over: the projections viewed [B, T, H, D], transposed to [B, H, T, D].
        q, k = rnd(B, T, s["heads"], D), rnd(B, T, s["kv_heads"], D)
        inv = 1.0 / (10000 ** (torch.arange(0, D, 2, device=dev, dtype=torch.float32) / D))
        emb = torch.cat([torch.outer(torch.arange(T, device=dev, dtype=torch.float32), inv)] * 2, -1)
        cos, sin = emb.cos().to(bf16)[None], emb.sin().to(bf16)[None]
        return [q, k], lambda: liger_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
    if op == "swiglu":
        from liger_kernel.ops.swiglu import LigerSiLUMulFunction
        g, u = rnd(N, s["intermediate"]), rnd(N, s["intermediate"])
        return [g, u], lambda: (LigerSiLUMulFunction.apply(g, u),)
    if op == "linear_cross_entropy":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
        h, w = rnd(N, s["hidden"]), (0.02 * torch.randn(s["vocab"], s["hidden"], device=dev, dtype=bf16)).requires_grad_()
        labels = torch.randint(0, s["vocab"], (N,), device=dev)
        loss = LigerFusedLinearCrossEntropyLoss(reduction="sum")
        return [h, w], lambda: (loss(w, h, labels),)
    return None


def time_calls(torch, call, batch, iterations):
    """Mean seconds per call of each timed interval (after one warm-up batch)."""
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(batch):
        call()
    torch.cuda.synchronize()
    times = []
    for _ in range(iterations):
        torch.cuda._sleep(SPIN_CYCLES)
        start.record()
        for _ in range(batch):
            call()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1e-3 / batch)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--repetitions", type=int, default=5)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--batch", type=int, default=10)
    a = p.parse_args()
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
        wrt, forward = case
        for pass_ in ("fwd", "bwd"):
            name = f"{op}/{preset}/{pass_}/liger"
            nbytes = spec["backward_bytes" if pass_ == "bwd" else "forward_bytes"]
            flops = spec["backward_flops" if pass_ == "bwd" else "forward_flops"]
            outputs = forward() if pass_ == "bwd" else None
            grads = [torch.randn_like(o) for o in outputs] if outputs else None
            if pass_ == "bwd":
                call = lambda: torch.autograd.grad(outputs, wrt, grads, retain_graph=True, allow_unused=True)
            else:
                call = forward
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            reps = []
            for r in range(a.repetitions):
                t = statistics.fmean(time_calls(torch, call, a.batch, a.iterations))
                reps.append(t)
                entries.append({"name": name, "run_name": name, "run_type": "iteration", "repetitions": a.repetitions,
                                "repetition_index": r, "threads": 1, "iterations": a.iterations,
                                "real_time": t * 1e6, "cpu_time": t * 1e6, "time_unit": "us",
                                "model_bytes": nbytes, "bytes_per_second": nbytes / t, "tflops": flops / t / 1e12,
                                "peak_extra_bytes": float(torch.cuda.max_memory_allocated() - base)})
            med = statistics.median(reps)
            entries.append({"name": name + "_median", "run_name": name, "run_type": "aggregate", "aggregate_name": "median",
                            "repetitions": a.repetitions, "threads": 1, "iterations": a.repetitions,
                            "real_time": med * 1e6, "cpu_time": med * 1e6, "time_unit": "us",
                            "bytes_per_second": nbytes / med, "tflops": flops / med / 1e12,
                            "peak_extra_bytes": float(torch.cuda.max_memory_allocated() - base)})
            print(f"{name}: {med * 1e3:.3f} ms, {nbytes / med / 1e9:.0f} GB/s", flush=True)
            del outputs, grads
        del case, wrt, forward
        torch.cuda.empty_cache()
    doc = {"context": {"executable": "bench/kernels/liger_ops.py", "liger_kernel": liger_version,
                       "torch": torch.__version__, "device": torch.cuda.get_device_name(0)},
           "benchmarks": entries}
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
