#!/usr/bin/env python3
"""Side-by-side table of the result documents in one folder, as scripts/gpu-check writes them
(<workload>-<trainer>-n<gpus>.json): tokens/s per GPU, step time, peak memory, scaling efficiency
against the same trainer on 1 GPU, the built-in/HF speed ratio, and how far the two trainers' loss
curves lie apart at the same GPU count (largest relative difference over all steps)."""
import glob
import json
import os
import re
import sys


def main(folder):
    docs = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        m = re.match(r"(.+)-(builtin|hf)-n(\d+)\.json$", os.path.basename(path))
        if m:
            docs[(m.group(1), m.group(2), int(m.group(3)))] = json.load(open(path))
    print(f"{'workload':10s} {'trainer':8s} {'gpus':>4s} {'status':6s} {'tok/s/gpu':>10s} {'p50 ms':>8s} {'p95 ms':>8s} "
          f"{'peak GiB':>8s} {'resv GiB':>8s} {'scaling':>8s} {'vs hf':>7s} {'loss':>8s} {'max dloss':>9s}")
    for (w, t, n), d in sorted(docs.items()):
        s, st = d["summary"], d["status"]
        one = docs.get((w, t, 1))
        scaling = ""
        if one and one["status"]["state"] == "ok" and st["state"] == "ok" and n > 1:
            scaling = f"{100 * s['tokens_per_s_per_gpu'] / one['summary']['tokens_per_s_per_gpu']:.1f}%"
        other = docs.get((w, "hf", n))
        ratio, dloss = "", ""
        if t == "builtin" and other and other["status"]["state"] == "ok" and st["state"] == "ok":
            ratio = f"{s['tokens_per_s_per_gpu'] / other['summary']['tokens_per_s_per_gpu']:.3f}x"
            a = [x["loss"] for x in d["steps"]]
            b = [x["loss"] for x in other["steps"]]
            if len(a) == len(b) and a:
                dloss = f"{max(abs(x - y) / abs(y) for x, y in zip(a, b)):.2e}"
        print(f"{w:10s} {t:8s} {n:4d} {st['state']:6s} {s['tokens_per_s_per_gpu']:10.0f} {s['step_time_p50_s'] * 1e3:8.1f} "
              f"{s['step_time_p95_s'] * 1e3:8.1f} {s['peak_allocated_bytes'] / 2**30:8.2f} {s['peak_reserved_bytes'] / 2**30:8.2f} "
              f"{scaling:>8s} {ratio:>7s} {s['final_loss']:8.4f} {dloss:>9s} {st.get('reason', '')[:100]}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
