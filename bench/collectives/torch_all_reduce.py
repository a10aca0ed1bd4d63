#!/usr/bin/env python3
"""torch.distributed.all_reduce timed the way `ddpbench bench collectives` times its own calls, at the
sizes of one of its runs: the cross-check of ddpbench's NCCL figures against the calls every PyTorch
trainer makes (DDP's buckets go through this all_reduce).

From the run folder (its in-place all_reduce cells) come the device, rank count, dtypes, sizes, calls
per timed interval (batch) and repetitions. Per size: `batch` in-place calls between two CUDA events
(wall-clock on the CPU) after a warm-up call, the median of the repetitions; algbw = bytes / time,
busbw = algbw x 2(n-1)/n (nccl-tests' factor for all-reduce, as ddpbench's). Then one checked call:
rank r holds r + 1 + (i mod 4) at element i, so every element of the sum is n(n+1)/2 + n (i mod 4),
exact in bf16 for the rank counts of a node; the elements that differ are counted as wrong.

Prints both busbw side by side with their ratio, and writes JSON (--out). Exit status: 0, 1 when a
data check found a wrong element, 2 for a bad argument or run folder.

    python3 bench/collectives/torch_all_reduce.py --run RUN_DIR --out torch.json
"""
import argparse
import json
import os
import socket
import statistics
import sys

DTYPES = {"bf16": "bfloat16", "fp32": "float32", "fp16": "float16"}


def fail(message):
    print(f"torch_all_reduce: {message}", file=sys.stderr)
    sys.exit(2)


def read_run(run_dir):
    """The in-place all_reduce cells of a ddpbench collectives run: their config and rows."""
    index_path = os.path.join(run_dir, "run.json")
    try:
        with open(index_path) as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{index_path}: not a readable run index ({e})")
    if index.get("kind") != "collectives":
        fail(f"{index_path}: not a `ddpbench bench collectives` run (kind {index.get('kind')!r})")
    series = []
    for entry in index.get("cells", []):
        path = os.path.join(run_dir, entry.get("file", ""))
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            fail(f"{path}: not a readable cell document ({e})")
        c = doc.get("config", {})
        if c.get("collective") == "all_reduce" and c.get("mode") == "in-place" and doc.get("rows"):
            series.append(doc)
    if not series:
        fail(f"{run_dir}: no in-place all_reduce cell with rows")
    first = series[0]["config"]
    for doc in series:
        for key in ("device", "nproc", "nnodes"):
            if doc["config"].get(key) != first.get(key):
                fail(f"{run_dir}: cells differ in {key}")
    if first.get("nnodes", 1) != 1:
        fail(f"{run_dir}: a run of {first['nnodes']} nodes; this cross-check runs on one")
    return series


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank, world, port, series, inject_error_rank, results):
    import torch
    import torch.distributed as dist

    cuda = series[0]["config"]["device"] == "cuda"
    if cuda:
        torch.cuda.set_device(rank)
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, **({"device_id": device} if cuda else {}))
    try:
        out = []
        for doc in series:
            c = doc["config"]
            dtype = getattr(torch, DTYPES[c["dtype"]])
            batch, reps = int(c.get("batch", 1)), int(c.get("repetitions", 1))
            rows = []
            for ref in doc["rows"]:
                count = int(ref["count"])
                x = torch.zeros(count, dtype=dtype, device=device)
                dist.all_reduce(x)  # warm-up: the communicator's first call at this size
                times = []
                for _ in range(reps):
                    dist.barrier()
                    if cuda:
                        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        start.record()
                        for _ in range(batch):
                            dist.all_reduce(x)
                        end.record()
                        end.synchronize()
                        times.append(start.elapsed_time(end) * 1e-3 / batch)
                    else:
                        import time
                        t0 = time.perf_counter()
                        for _ in range(batch):
                            dist.all_reduce(x)
                        times.append((time.perf_counter() - t0) / batch)
                i = torch.arange(count, device=device) % 4
                x = (rank + 1 + i).to(dtype)
                dist.all_reduce(x)
                if rank == inject_error_rank:
                    x[count // 2] += 1
                expected = (world * (world + 1) // 2 + world * i).to(dtype)
                wrong = torch.tensor([int((x != expected).sum().item())], device=device)
                dist.all_reduce(wrong)  # every rank's wrong elements
                wrong = int(wrong.item())
                # Rank-averaged, as ddpbench and nccl-tests report a collective's time.
                t = torch.tensor([statistics.median(times)], dtype=torch.float64, device=device)
                dist.all_reduce(t)
                t = t.item() / world
                algbw = ref["bytes"] / t / 1e9
                rows.append({"bytes": ref["bytes"], "count": count, "time_s": t, "algbw_GBps": algbw,
                             "busbw_GBps": algbw * 2 * (world - 1) / world, "wrong": wrong,
                             "ddpbench_busbw_GBps": ref.get("busbw_GBps"), "ddpbench_time_s": ref.get("time_s")})
            out.append({"dtype": c["dtype"], "rows": rows})
        if rank == 0:
            results.put({"series": out, "wrong_any_rank": sum(r["wrong"] for s in out for r in s["rows"])})
    finally:
        dist.destroy_process_group()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a `ddpbench bench collectives` run folder")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--inject-error-rank", type=int, default=-1,
                    help="this rank spoils one element of each checked result (tests the data check)")
    a = ap.parse_args(argv)
    series = read_run(a.run)
    world = int(series[0]["config"]["nproc"])
    import torch
    import torch.multiprocessing as mp
    if series[0]["config"]["device"] == "cuda" and torch.cuda.device_count() < world:
        fail(f"{a.run}: measured on {world} GPUs, {torch.cuda.device_count()} visible")
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.spawn(rank_main, args=(world, free_port(), series, a.inject_error_rank, results), nprocs=world, join=True)
    got = results.get()
    doc = {"kind": "collectives-torch-cross-check", "run": a.run, "torch": torch.__version__, "nproc": world,
           "device": series[0]["config"]["device"], "series": got["series"], "wrong_elements": got["wrong_any_rank"]}
    print(f"torch {torch.__version__} all_reduce (in place) against ddpbench's, {world} ranks on {doc['device']}")
    print(f"{'dtype':>6} {'bytes':>12} {'ddpbench busbw':>15} {'torch busbw':>12} {'ratio':>7} {'wrong':>6}")
    for s in got["series"]:
        for r in s["rows"]:
            ours = r["ddpbench_busbw_GBps"]
            r["ratio"] = ours / r["busbw_GBps"] if ours and r["busbw_GBps"] > 0 else None
            ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "-"
            print(f"{s['dtype']:>6} {r['bytes']:>12} {ours if ours is not None else float('nan'):>12.2f} GB/s "
                  f"{r['busbw_GBps']:>8.2f} GB/s {ratio:>7} {r['wrong']:>6}")
    large = [r["ratio"] for s in got["series"] for r in s["rows"] if r["ratio"] is not None and r["bytes"] >= 1 << 20]
    if large:
        doc["largest_abs_deviation_at_1MiB_and_up"] = max(abs(x - 1) for x in large)
        print(f"sizes of 1 MiB and up: ddpbench's busbw within {100 * doc['largest_abs_deviation_at_1MiB_and_up']:.1f}% of torch's")
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrong elements: {doc['wrong_elements']}; written {a.out}")
    return 1 if doc["wrong_elements"] else 0


if __name__ == "__main__":
    sys.exit(main())
