#!/usr/bin/env python3
"""Checks a ddpbench Chrome trace against what Holistic Trace Analysis needs to load a rank's
trace: distributedInfo.rank, deviceProperties, complete events with ts/dur/pid/tid/name/cat, the
categories its parser keys on (kernel, gpu_memcpy, gpu_memset, user_annotation) and stream /
correlation args on GPU events. Exit 1 with the first problems listed. Usage: check_trace.py FILE..."""
import json
import sys

REQUIRED = ("ph", "ts", "dur", "pid", "tid", "name", "cat")
GPU_CATS = {"kernel", "gpu_memcpy", "gpu_memset"}


def check(path):
    problems = []
    doc = json.load(open(path))
    info = doc.get("distributedInfo", {})
    if not isinstance(info.get("rank"), int):
        problems.append("distributedInfo.rank missing")
    if not doc.get("deviceProperties"):
        problems.append("deviceProperties missing")
    events = doc.get("traceEvents", [])
    cats = {}
    for i, e in enumerate(events):
        if e.get("ph") != "X":
            continue
        missing = [k for k in REQUIRED if k not in e]
        if missing:
            problems.append(f"event {i} lacks {missing}")
        elif e["dur"] < 0 or not isinstance(e["ts"], (int, float)):
            problems.append(f"event {i}: bad ts/dur")
        cats[e.get("cat")] = cats.get(e.get("cat"), 0) + 1
        if e.get("cat") in GPU_CATS and not {"stream", "correlation", "device"} <= set(e.get("args", {})):
            problems.append(f"event {i} ({e.get('cat')}) lacks stream/correlation/device args")
        if len(problems) > 10:
            break
    if not cats.get("kernel"):
        problems.append("no kernel events")
    return problems, cats


def main(paths):
    bad = 0
    for p in paths:
        problems, cats = check(p)
        status = "ok" if not problems else "FAIL"
        print(f"{status} {p}: {sum(cats.values())} complete events, categories {cats}")
        for msg in problems:
            print(f"   {msg}")
        bad += bool(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
