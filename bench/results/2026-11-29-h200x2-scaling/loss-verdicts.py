#!/usr/bin/env python3
# Loss curves of this folder's runs against the built-in trainer's, by the rules `ddpbench run` and
# `ddpbench report` apply (reports/ddpbench_report/stats.py: curve_distance = results::max_loss_difference,
# curve_bias = results::mean_loss_difference, loss_verdict, bias_verdict), over the measured steps.
# These runs have no A/A twins, so the suite's own verdict is "no A/A floor" everywhere. The
# full-350m-bf16-norms cells read the same checkpoint and tokens as full-350m in
# ../2026-11-29-h200x1-peers-floors (a one-rank token file in both runs; see README), so that run's
# floors, recomputed here from its committed documents, are applied to them and named as borrowed.
# Usage: python3 bench/results/2026-11-29-h200x2-scaling/loss-verdicts.py > .../loss-verdicts.txt
import glob
import json
import os
import re
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "..", "reports"))
from ddpbench_report import stats  # noqa: E402

TRAINERS = ["builtin", "builtin-fused", "hf", "liger", "unsloth"]


def cells_of(run_glob: str) -> dict:
    out = {}
    for f in glob.glob(run_glob + "/cells/*.json"):
        d = json.load(open(f))
        if d.get("steps"):  # cells/ holds the documents of cells that ran
            out[d["cell"]] = [s["loss"] for s in d["steps"] if not s["warmup"]]
    return out


def split(name: str):
    return re.match(r"([^/]+)/([^/]+)/(n\d+)/(.*)", name).groups()


def fmt(v):
    return "-" if v is None else "%.2e" % v


now = cells_of(os.path.join(here, "runs", "*"))
print("This run: every trainer's curve against the built-in one at the same GPU count (no A/A twins run: the suite's verdict is")
print("'no A/A floor'); max |loss difference|, mean difference (trainer - builtin), steps where the trainer is lower:")
for name in sorted(now):
    w, t, n, rest = split(name)
    base = "%s/builtin/%s/%s" % (w, n, rest)
    if t == "builtin" or base not in now:
        continue
    a, b = now[name], now[base]
    lower = sum(x < y for x, y in zip(a, b))
    print("  %-42s max %s  mean %+.2e  lower at %2d/%d steps: %s / %s" % (
        name, fmt(stats.curve_distance(a, b)), stats.curve_bias(a, b), lower, len(a),
        stats.loss_verdict(stats.curve_distance(a, b), None), stats.bias_verdict(stats.curve_bias(a, b), None)))

# The borrowed floors: each trainer's one-GPU full-350m cell against its A/A twin, same tokens.
old = cells_of(os.path.join(here, "..", "2026-11-29-h200x1-peers-floors", "runs", "*"))
floor, bias_floor = {}, {}
for t in TRAINERS:
    cell, twin = "full-350m/%s/n1/b4/g1/s2048" % t, "full-350m-aa/%s/n1/b2/g2/s2048" % t
    floor[t] = stats.curve_distance(old[cell], old[twin])
    bias_floor[t] = abs(stats.curve_bias(old[cell], old[twin]))
largest_bias = max(bias_floor.values())
print()
print("full-350m A/A floors of ../2026-11-29-h200x1-peers-floors (the same checkpoint and tokens as full-350m-bf16-norms):")
for t in TRAINERS:
    print("  %-13s max %s  bias %s" % (t, fmt(floor[t]), fmt(bias_floor[t])))
print("  workload's largest A/A bias %s" % fmt(largest_bias))

b16 = "full-350m-bf16-norms/%s/n1/b4/g1/s2048"
a, b = now[b16 % "unsloth"], now[b16 % "builtin"]
d, m = stats.curve_distance(a, b), stats.curve_bias(a, b)
larger = max(("unsloth", "builtin"), key=lambda t: floor[t])
print()
print("full-350m-bf16-norms (UNSLOTH_DISABLE_FLOAT32_UPCAST=1) by those floors, the suite's rule (larger of the two trainers' max")
print("floors; the workload's largest A/A bias):")
print("  %s  max %s %s %s (%s's); mean %+.2e: %s (%s)" % (
    b16 % "unsloth", fmt(d), stats.loss_verdict(d, floor[larger]), fmt(floor[larger]), larger, m,
    stats.bias_verdict(m, largest_bias), fmt(largest_bias)))
print()
print("Pairs across the two calls on the same work (full-350m in peers-floors, full-350m-bf16-norms here), a minus b:")
pairs = [("builtin here", now[b16 % "builtin"], "builtin there", old["full-350m/builtin/n1/b4/g1/s2048"]),
         ("unsloth bf16 norms here", now[b16 % "unsloth"], "unsloth fp32 norms there", old["full-350m/unsloth/n1/b4/g1/s2048"]),
         ("unsloth fp32 norms there", old["full-350m/unsloth/n1/b4/g1/s2048"], "builtin there", old["full-350m/builtin/n1/b4/g1/s2048"])]
for la, ca, lb, cb in pairs:
    print("  %-26s - %-24s max %s  mean %+.2e  lower at %2d/%d steps" % (
        la, lb, fmt(stats.curve_distance(ca, cb)), stats.curve_bias(ca, cb), sum(x < y for x, y in zip(ca, cb)), len(ca)))
# Where the bf16-norms difference lies: the mean over the first, middle and last 15 measured steps.
diff = [x - y for x, y in zip(now[b16 % "unsloth"], now[b16 % "builtin"])]
old_diff = [x - y for x, y in zip(old["full-350m/unsloth/n1/b4/g1/s2048"], old["full-350m/builtin/n1/b4/g1/s2048"])]
print()
print("unsloth - builtin by thirds of the measured steps (steps 5-19, 20-34, 35-49): mean difference")
for label, dd in (("bf16 norms (here)", diff), ("fp32 norms (peers-floors)", old_diff)):
    thirds = [sum(dd[i:i + 15]) / 15 for i in (0, 15, 30)]
    print("  %-26s %s" % (label, "  ".join("%+.2e" % v for v in thirds)))
