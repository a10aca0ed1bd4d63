#!/usr/bin/env python3
"""Side-by-side table of the result documents in one folder, as scripts/gpu-check writes them
(<workload>-<trainer>-n<gpus>[-r<repeat>].json): tokens/s per GPU (the median over repeats, with
their range when a cell ran more than once), step time, peak memory, scaling efficiency against the
same trainer on 1 GPU (from tokens/s, as DESIGN.md defines it, and from median step times beside
it), the built-in/HF speed ratio, the loss at the first and last step against
ln(vocab), and how far the two trainers' loss curves lie apart at the same GPU count (largest
relative difference over all steps, first repeat of each). Where the folder holds an A/A run
(<workload>-aa-n1.json: the built-in trainer, same batch as accumulated half micro-batches, the same
computation up to bf16 rounding), its distance from the built-in curve is printed as the floor that
rounding alone produces."""
import glob
import json
import math
import os
import re
import statistics
import sys


def load(folder):
    cells = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        m = re.match(r"(.+)-(builtin|hf|aa)-n(\d+)(?:-r(\d+))?\.json$", os.path.basename(path))
        if m:
            cells.setdefault((m.group(1), m.group(2), int(m.group(3))), []).append((int(m.group(4) or 1), json.load(open(path))))
    return {k: [d for _, d in sorted(v, key=lambda x: x[0])] for k, v in cells.items()}


def max_rel_diff(a_doc, b_doc):
    a = [x["loss"] for x in a_doc["steps"]]
    b = [x["loss"] for x in b_doc["steps"]]
    if len(a) != len(b) or not a:
        return ""
    return f"{max(abs(x - y) / abs(y) for x, y in zip(a, b)):.2e}"


def ok(docs):
    return [d for d in docs if d["status"]["state"] == "ok"]


def tps(docs):
    return statistics.median(d["summary"]["tokens_per_s_per_gpu"] for d in docs)


def p50s(docs):
    return statistics.median(d["summary"]["step_time_p50_s"] for d in docs)


def vocab_of(doc):
    shapes = {"tiny": 256, "350m": 32000, "1b": 128256, "8b": 128256}
    return shapes.get(doc.get("config", {}).get("preset", ""), 0)


def main(folder):
    cells = load(folder)
    print(f"{'workload':10s} {'trainer':8s} {'gpus':>4s} {'runs':>4s} {'tok/s/gpu':>10s} {'range':>15s} {'p50 ms':>8s} "
          f"{'p95 ms':>8s} {'peak GiB':>8s} {'scaling':>8s} {'by p50':>7s} {'vs hf':>7s} {'loss 1st':>8s} {'last':>7s} "
          f"{'ln(V)':>6s} {'max dloss':>9s} {'A/A':>9s}")
    for (w, t, n), docs in sorted(cells.items()):
        good = ok(docs)
        if not good:
            reason = docs[0]["status"].get("reason", "")[:100]
            print(f"{w:10s} {t:8s} {n:4d} {len(docs):4d} failed: {reason}")
            continue
        first = good[0]
        s = first["summary"]
        speeds = [d["summary"]["tokens_per_s_per_gpu"] for d in good]
        spread = f"{min(speeds):.0f}-{max(speeds):.0f}" if len(good) > 1 else ""
        one = ok(cells.get((w, t, 1), []))
        scaling = f"{100 * tps(good) / tps(one):.1f}%" if one and n > 1 else ""
        # The same ratio from median step times: what the tokens/s figure would be without slow-step
        # outliers (tokens/s divides by the total time, so a few slow steps weigh in fully).
        p50_scaling = f"{100 * p50s(one) / p50s(good):.1f}%" if one and n > 1 else ""
        other = ok(cells.get((w, "hf", n), []))
        ratio, dloss, floor = "", "", ""
        if t == "builtin" and other:
            ratio = f"{tps(good) / tps(other):.3f}x"
            dloss = max_rel_diff(first, other[0])
        aa = ok(cells.get((w, "aa", n), []))
        if t == "builtin" and aa:
            floor = max_rel_diff(aa[0], first)
        losses = [x["loss"] for x in first["steps"]]
        v = vocab_of(first)
        p50 = statistics.median(d["summary"]["step_time_p50_s"] for d in good) * 1e3
        p95 = statistics.median(d["summary"]["step_time_p95_s"] for d in good) * 1e3
        peak = max(d["summary"]["peak_allocated_bytes"] for d in good) / 2**30
        failed = f" ({len(docs) - len(good)} failed)" if len(good) < len(docs) else ""
        print(f"{w:10s} {t:8s} {n:4d} {len(good):4d} {tps(good):10.0f} {spread:>15s} {p50:8.1f} {p95:8.1f} {peak:8.2f} "
              f"{scaling:>8s} {p50_scaling:>7s} {ratio:>7s} {losses[0]:8.4f} {losses[-1]:7.4f} {math.log(v) if v else 0:6.2f} {dloss:>9s} {floor:>9s}{failed}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
