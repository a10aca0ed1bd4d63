"""Liger-Kernel's LigerFusedLinearCrossEntropyLoss and torch's unfused linear + cross-entropy at the
1b shape (8192 tokens, hidden 2048, vocab 128256, bf16), forward + backward, timed as
tests/test_fused_gpu.cpp times the built-in fused op (warm-up, then the mean of 5 calls; peak
allocated beyond what was allocated before). One JSON line per (implementation, weight gradient)."""
import json
import time

import torch

N, H, V = 8192, 2048, 128256
dev = "cuda"
torch.manual_seed(0)
hidden = torch.randn(N, H, device=dev).to(torch.bfloat16)
weight = (torch.randn(V, H, device=dev) / H**0.5).to(torch.bfloat16)
labels = torch.randint(0, V, (N,), device=dev)
labels[torch.rand(N, device=dev) < 0.1] = -100


def unfused(h, w, y):
    return torch.nn.functional.cross_entropy((h @ w.t()).float(), y, reduction="sum", ignore_index=-100)


impls = {"torch": unfused}
try:
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    liger = LigerFusedLinearCrossEntropyLoss(reduction="sum", ignore_index=-100)
    impls["liger"] = lambda h, w, y: liger(w, h, y)
except ImportError as e:
    print(json.dumps({"impl": "liger", "skipped": str(e)}))

for name, fn in impls.items():
    for weight_grad in (True, False):
        h = hidden.clone().requires_grad_(True)
        w = weight.clone().requires_grad_(weight_grad)

        def step():
            h.grad = None
            w.grad = None
            fn(h, w, labels).backward(torch.tensor(0.5, device=dev))

        step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        for _ in range(5):
            step()
        torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) / 5 * 1e3
        extra = (torch.cuda.max_memory_allocated() - base) / 2**30
        print(json.dumps({"impl": name, "weight_grad": weight_grad, "ms": round(ms, 2), "extra_gib": round(extra, 3)}))
