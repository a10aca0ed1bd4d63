"""What every Python trainer of ddpbench shares: one rank's configuration, torchrun environment, the
token file (harness/train/token_file.h), the rank report (harness/results/results.h), the live step
line, the bf16 matrix rate for MFU, NVTX phase ranges and the failure path.

The trainers themselves: hf_loop.py (a hand-written Transformers + PEFT + DDP loop, kept as a
diagnostic) and peer_trainers.py (the Hugging Face Trainer, Liger-Kernel and Unsloth, configured as
their own documentation configures them: the baselines users actually run).
"""

import array
import contextlib
import importlib.metadata
import json
import math
import mmap
import os
import resource
import socket
import struct
import sys
import threading
import time
import traceback

T_START = time.perf_counter()  # setup_s counts from here: imports, model load, rendezvous, DDP wrap

SCHEMA_VERSION = 1
IGNORE_INDEX = -100
PAD_TOKEN = 0
TOKEN_MAGIC = b"DDPBTOK1"
TOKEN_HEADER = struct.Struct("<8sIIQQ")  # magic, version, vocab, documents, tokens
LOSS_NORMS = ("global-tokens", "mean-of-micro-means", "local-tokens")
OPTIM_STATES = ("fp32", "param")
# The Python packages whose versions a result must carry (DESIGN.md: the environment fingerprint).
FINGERPRINT_PACKAGES = ("torch", "transformers", "peft", "accelerate", "trl", "liger-kernel", "unsloth",
                        "unsloth_zoo", "datasets")


_KEEP_ALIVE = []  # what must outlive main() on the failure path


class ConfigError(Exception):
    """A problem with the configuration or its inputs; its message is shown as it is."""


# --------------------------------------------------------------------------------------------
# Configuration


def _need(cfg, key, kinds, path):
    if key not in cfg:
        raise ConfigError(f"config {path}: missing field '{key}'")
    value = cfg[key]
    # bool is an int in Python: keep true/false out of numeric fields and numbers out of flags.
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(f"config {path}: field '{key}' must be {kinds[0].__name__}, got {value!r}")
    if not isinstance(value, kinds):
        raise ConfigError(f"config {path}: field '{key}' must be {kinds[0].__name__}, got {value!r}")
    return value


# The fields this trainer reads (the rest of train::to_json, e.g. preset, impl, lengths, data, is
# ignored: the checkpoint fixes the shape and the token file the data).
REQUIRED_FIELDS = {
    "device": (str,),
    "mode": (str,),
    "micro_batch": (int,),
    "grad_accum": (int,),
    "seq_len": (int,),
    "steps": (int,),
    "warmup": (int,),
    "lr": (float, int),
    "weight_decay": (float, int),
    "max_grad_norm": (float, int),
    "loss_norm": (str,),
    "bucket_cap_mb": (int,),
    "timeout_s": (int,),
    "checkpoint": (str,),
    "data_file": (str,),
    "grad_ckpt": (bool,),
}
LORA_FIELDS = {"lora_rank": (int,), "lora_alpha": (float, int), "lora_targets": (list,)}


def load_config(path):
    try:
        with open(path, "r", encoding="utf-8") as f:
            cfg = json.load(f)
    except OSError as e:
        raise ConfigError(f"config {path}: cannot read: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"config {path}: not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"config {path}: expected a JSON object")
    for key, kinds in REQUIRED_FIELDS.items():
        _need(cfg, key, kinds, path)
    if cfg["mode"] not in ("lora", "full"):
        raise ConfigError(f"config {path}: mode '{cfg['mode']}' is neither lora nor full")
    if cfg["mode"] == "lora":
        for key, kinds in LORA_FIELDS.items():
            _need(cfg, key, kinds, path)
    if cfg["device"] not in ("cpu", "cuda"):
        raise ConfigError(f"config {path}: device '{cfg['device']}' is neither cpu nor cuda")
    cfg.setdefault("optim_state", "fp32")
    if cfg["optim_state"] not in OPTIM_STATES:
        raise ConfigError(f"config {path}: optim_state '{cfg['optim_state']}' is not one of {', '.join(OPTIM_STATES)}")
    if cfg["loss_norm"] not in LOSS_NORMS:
        raise ConfigError(f"config {path}: loss_norm '{cfg['loss_norm']}' is not one of {', '.join(LOSS_NORMS)}")
    for key in ("micro_batch", "grad_accum", "steps", "bucket_cap_mb", "timeout_s"):
        if cfg[key] < 1:
            raise ConfigError(f"config {path}: {key} must be at least 1, got {cfg[key]}")
    if cfg["seq_len"] < 2:
        raise ConfigError(f"config {path}: seq_len must be at least 2, got {cfg['seq_len']}")
    if cfg["warmup"] < 0:
        raise ConfigError(f"config {path}: warmup must not be negative, got {cfg['warmup']}")
    if not cfg["checkpoint"]:
        raise ConfigError(f"the {cfg.get('trainer', 'hf')} trainer needs a checkpoint: set checkpoint (--checkpoint) to a "
                          "Hugging Face checkpoint folder (config.json + model.safetensors)")
    if not cfg["data_file"]:
        raise ConfigError(f"the {cfg.get('trainer', 'hf')} trainer needs a token file: set data_file (--data-file) to a "
                          "ddpbench token file")
    if not os.path.isdir(cfg["checkpoint"]):
        raise ConfigError(f"checkpoint {cfg['checkpoint']}: not a folder")
    if not os.path.isfile(os.path.join(cfg["checkpoint"], "config.json")):
        raise ConfigError(f"checkpoint {cfg['checkpoint']}: no config.json in it")
    return cfg


def env_int(name, fallback=None):
    value = os.environ.get(name)
    if value is None:
        if fallback is not None:
            return fallback
        raise ConfigError(f"environment variable {name} is not set (start ranks with `ddpbench` or torchrun)")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}='{value}' is not a whole number") from None


class RankEnv:
    def __init__(self):
        self.rank = env_int("RANK", 0)
        self.world_size = env_int("WORLD_SIZE", 1)
        self.local_rank = env_int("LOCAL_RANK", self.rank)
        self.local_world_size = env_int("LOCAL_WORLD_SIZE", self.world_size)
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"RANK={self.rank} is outside WORLD_SIZE={self.world_size}")


def prepare_rendezvous_env(world_size):
    """torch's env:// rendezvous needs MASTER_ADDR/PORT; a lone rank may go without (as the built-in)."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        if world_size != 1:
            raise ConfigError("environment variable MASTER_PORT is not set (start ranks with `ddpbench` or torchrun)")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])


# --------------------------------------------------------------------------------------------
# Token file (harness/train/token_file.h)


def _u32_array(data):
    """Little-endian u32 bytes -> array of unsigned 32-bit ints in host order."""
    code = next(c for c in ("I", "L") if array.array(c).itemsize == 4)
    out = array.array(code)
    out.frombytes(data)
    if sys.byteorder != "little":
        out.byteswap()
    return out


class TokenFile:
    """Reads a "ddpbench tokens v1" file and serves batches with the header's mapping: row g of the
    global batch of step s is document (s * global_batch + g) mod D, cut to seq_len or right-padded
    with token 0 and label -100."""

    def __init__(self, path):
        import torch

        self.path = path
        try:
            self._file = open(path, "rb")
        except OSError as e:
            raise ConfigError(f"data_file {path}: cannot open: {e.strerror}") from None
        size = os.fstat(self._file.fileno()).st_size
        if size < TOKEN_HEADER.size:
            raise ConfigError(f"data_file {path}: {size} bytes, too short for a token file header")
        self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        magic, version, vocab, docs, tokens = TOKEN_HEADER.unpack_from(self._mm, 0)
        if magic != TOKEN_MAGIC:
            raise ConfigError(f"data_file {path}: not a ddpbench token file (magic {magic!r})")
        if version != 1:
            raise ConfigError(f"data_file {path}: version {version}, this reader knows version 1")
        if docs == 0:
            raise ConfigError(f"data_file {path}: holds no documents")
        expected = TOKEN_HEADER.size + 4 * docs + 4 * tokens
        if size != expected:
            raise ConfigError(f"data_file {path}: {size} bytes, the header says {expected} "
                              f"({docs} documents, {tokens} tokens)")
        self.vocab = vocab
        self.documents = docs
        self.tokens = tokens
        self._tokens_at = TOKEN_HEADER.size + 4 * docs
        lengths = _u32_array(self._mm[TOKEN_HEADER.size:self._tokens_at])
        lengths = torch.frombuffer(lengths, dtype=torch.int32).to(torch.int64) & 0xFFFFFFFF
        if int(lengths.min()) < 2:
            bad = int(torch.nonzero(lengths < 2)[0, 0])
            raise ConfigError(f"data_file {path}: document {bad} has {int(lengths[bad])} tokens (at least 2 needed)")
        if int(lengths.sum()) != tokens:
            raise ConfigError(f"data_file {path}: document lengths sum to {int(lengths.sum())}, the header says {tokens}")
        self._lengths = lengths
        self._offsets = torch.cumsum(lengths, 0) - lengths

    def document(self, index, limit=None):
        import torch

        n = int(self._lengths[index])
        if limit is not None:
            n = min(n, limit)
        start = self._tokens_at + 4 * int(self._offsets[index])
        ids = _u32_array(self._mm[start:start + 4 * n])
        return torch.frombuffer(ids, dtype=torch.int32).to(torch.int64) & 0xFFFFFFFF

    def row_lengths(self, step, global_batch, first, count, seq_len):
        """Lengths (cut to seq_len) of global-batch rows [first, first + count) of step `step`,
        from the header alone."""
        return [min(int(self._lengths[(step * global_batch + first + i) % self.documents]), seq_len)
                for i in range(count)]

    def rows(self, step, global_batch, first, count, seq_len):
        """Global-batch rows [first, first + count) of optimizer step `step`: (tokens, labels,
        lengths), tokens and labels int64 [count, seq_len]."""
        import torch

        tokens = torch.full((count, seq_len), PAD_TOKEN, dtype=torch.int64)
        labels = torch.full((count, seq_len), IGNORE_INDEX, dtype=torch.int64)
        lengths = []
        for i in range(count):
            doc = (step * global_batch + first + i) % self.documents
            ids = self.document(doc, seq_len)
            n = ids.numel()
            tokens[i, :n] = ids
            labels[i, :n] = ids
            lengths.append(n)
        return tokens, labels, lengths

    def close(self):
        self._mm.close()
        self._file.close()


# --------------------------------------------------------------------------------------------
# Output


def format_si(value, precision=1):
    """As ddpbench::format_si: 12345 -> "12.3k"."""
    suffix = ["", "k", "M", "G", "T", "P"]
    i = 0
    v = value
    round_up = 1000.0 - 0.5 * 10.0 ** (-precision)
    while abs(v) >= (1000.0 if i == 0 else round_up) and i < 5:
        v /= 1000.0
        i += 1
    return f"{v:.{0 if i == 0 else precision}f}{suffix[i]}"


def format_bytes(value):
    """As ddpbench::format_bytes: 1536 -> "1.50 KiB"."""
    suffix = ["B", "KiB", "MiB", "GiB", "TiB"]
    i = 0
    while value >= 1024.0 and i < 4:
        value /= 1024.0
        i += 1
    return f"{value:.{0 if i == 0 else 2}f} {suffix[i]}"


def print_step_line(cfg, sample, global_tokens, world, peak_flops=0.0):
    """The built-in trainer's live line (print_step_line in trainer.cpp); MFU where this GPU's bf16
    matrix rate was measured and the config carries the model's FLOPs per token."""
    total = cfg["warmup"] + cfg["steps"]
    t = sample["step_time_s"]
    tps = global_tokens / t if t > 0 else math.inf
    flops = cfg.get("model_flops_per_token", 0)
    mfu = " | mfu %4.1f%%" % (100.0 * flops * tps / world / peak_flops) if peak_flops > 0 and flops > 0 else ""
    print("step %4d/%d%s | loss %.4f | %s tok/s (%s per rank)%s | %8.1f ms | mem %s | N %d | norm %.3f"
          % (sample["step"] + 1, total, " (warmup)" if sample["warmup"] else "         ", sample["loss"],
             format_si(tps), format_si(tps / world), mfu, t * 1e3, format_bytes(float(sample["mem_allocated_peak"])),
             sample["global_predicted_tokens"], sample["grad_norm"]),
          flush=True)


def check_finite_step(step, loss, grad_norm):
    """Raises when a step's loss or gradient norm is NaN or infinite (the built-in trainer's check in
    trainer.cpp): a diverged run fails in phase "step N" instead of reporting NaN figures as ok.
    grad_norm None: the trainer computed none (no clipping)."""
    if math.isfinite(loss) and (grad_norm is None or math.isfinite(grad_norm)):
        return
    what = "gradient norm" if math.isfinite(loss) else "loss"
    raise RuntimeError(f"non-finite {what} at step {step} (loss {loss}, gradient norm {grad_norm}): "
                       "the run diverged; try a smaller --lr")


def measure_bf16_matmul_flops(torch, device):
    """The bf16 matrix rate of this GPU (FLOP/s), as ddp::measure_bf16_matmul_flops measures it:
    8192^3 products after warm-up; the operands go back to the driver afterwards."""
    n, warmup, reps = 8192, 3, 10
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    c = torch.empty(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(warmup):
        torch.mm(a, b, out=c)
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b, out=c)
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    del a, b, c
    torch.cuda.empty_cache()
    return 2.0 * n ** 3 * reps / seconds if seconds > 0 else 0.0


def json_number(x):
    # JSON has no NaN or infinity: the C++ side writes them as null (and reads null back as NaN).
    return None if isinstance(x, float) and not math.isfinite(x) else x


def new_report(env):
    return {
        "schema_version": SCHEMA_VERSION,
        "rank": env.rank if env else env_int_safe("RANK", 0),
        "local_rank": env.local_rank if env else env_int_safe("LOCAL_RANK", 0),
        "world_size": env.world_size if env else env_int_safe("WORLD_SIZE", 1),
        "host": socket.gethostname(),
        "device": "",
        "status": "ok",
        "phase": "setup",
        "error": "",
        "failed_at": 0.0,
        "setup_s": 0.0,
        "buckets": 0,
        "bucket_bytes": 0,
        "parameters": 0,
        "trainable_parameters": 0,
        "optimizer_state_bytes": 0,
        "matmul_bf16_flops": 0.0,
        "packages": package_versions(),
        "steps": [],
    }


def package_versions(names=FINGERPRINT_PACKAGES):
    """Installed versions of the packages a Python trainer's figures depend on ("" for one absent)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = ""
    return versions


def env_int_safe(name, fallback):
    try:
        return int(os.environ.get(name, fallback))
    except ValueError:
        return fallback


def write_report(out_dir, report):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"rank{report['rank']}.json")
    doc = dict(report)
    doc["steps"] = [{k: json_number(v) for k, v in s.items()} for s in report["steps"]]
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(doc, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


class StreamedSteps(list):
    """The report's steps, each also appended as one JSON line to <out>/rank<k>.steps.jsonl and
    flushed as it is measured (as the built-in trainer's worker does), so that a rank killed at step
    k still leaves its k completed steps for the launcher's side to read."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if os.path.exists(path):
            os.remove(path)

    def append(self, sample):
        super().append(sample)
        line = json.dumps({k: json_number(v) for k, v in sample.items()}) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)


def error_text(e):
    text = str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}".rstrip(": ")
    # Keep only the first line (as the built-in trainer does with c10 errors and their backtraces).
    return text.strip().split("\n", 1)[0]


# --------------------------------------------------------------------------------------------
# Training


def lr_at(cfg, step):
    """Linear warm-up to lr over lr_warmup optimizer steps, constant after (Config::lr_at)."""
    warm = int(cfg.get("lr_warmup", 0))
    lr = float(cfg["lr"])
    return lr * (step + 1) / warm if step < warm else lr


def select_device(torch, cfg, env, report):
    """(cuda?, torch.device) of this rank: its local GPU or the CPU, with OMP_NUM_THREADS (the
    launcher's share of the CPUs) as torch's thread count; the device goes into the report."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    cuda = cfg["device"] == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise ConfigError("device cuda: torch sees no CUDA device")
        torch.cuda.set_device(env.local_rank)
        device = torch.device("cuda", env.local_rank)
    else:
        device = torch.device("cpu")
    report["device"] = str(device)
    return cuda, device


def memory_peaks(torch, cuda, device):
    if cuda:
        return int(torch.cuda.max_memory_allocated(device)), int(torch.cuda.max_memory_reserved(device))
    rss = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    return rss, rss


def bucket_layout(ddp_model):
    """(buckets, bytes) of DDP's gradient buckets, from its logging data; (0, 0) if unavailable."""
    try:
        sizes = str(ddp_model._get_ddp_logging_data().get("bucket_sizes", ""))
        values = [int(x) for x in sizes.replace(" ", "").split(",") if x]
        return len(values), sum(values)
    except Exception:  # a private API: its absence must not fail a run
        return 0, 0


def check_loaded(loading, checkpoint):
    """Equal work means equal weights: a weight the checkpoint lacks, or holds in another shape, would be
    drawn at random; `loading` is from_pretrained's output_loading_info."""
    for kind in ("missing_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in (loading.get(kind) or ()))
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            raise ConfigError(f"checkpoint {checkpoint}: {kind.replace('_', ' ')} in model.safetensors: "
                              f"{', '.join(keys[:3])}{more}")


@contextlib.contextmanager
def base_model_folder(checkpoint, has_adapter):
    """The folder to load the base model from. Transformers loads an adapter it finds beside the
    weights by itself (frozen, in the base dtype); the adapter must come through PEFT instead, so the
    base loads from a temporary folder of links to everything but the adapter files."""
    if not has_adapter:
        yield checkpoint
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ddpbench-hf-base-") as folder:
        for name in os.listdir(checkpoint):
            if not name.startswith("adapter_"):
                os.symlink(os.path.abspath(os.path.join(checkpoint, name)), os.path.join(folder, name))
        yield folder


class NvtxRanges:
    """NVTX push/pop on CUDA (a no-op elsewhere): what a CUPTI collector or Nsight sees as phases."""

    def __init__(self, enabled):
        import torch
        self._nvtx = torch.cuda.nvtx if enabled else None

    def push(self, name):
        if self._nvtx is not None:
            self._nvtx.range_push(name)

    def pop(self):
        if self._nvtx is not None:
            self._nvtx.range_pop()


def _shutdown_best_effort(seconds=15.0):
    """Tears the process group down after a failure; a peer stuck in a collective must not keep
    this process alive, so a watchdog ends it if the teardown hangs."""
    try:
        import torch.distributed as dist
    except Exception:
        return
    if not (dist.is_available() and dist.is_initialized()):
        return
    timer = threading.Timer(seconds, lambda: os._exit(1))
    timer.daemon = True
    timer.start()
    try:
        dist.destroy_process_group()
    except Exception:
        pass
    timer.cancel()




def rank_main(description, run, argv=None):
    """One rank of a Python trainer: reads --config and --out, calls run(cfg, env, report) and writes
    <out>/rank<RANK>.json. Exit status 0, or 1 after writing the failed report."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="the cell's config.json")
    parser.add_argument("--out", required=True, help="folder for rank<RANK>.json")
    args = parser.parse_args(argv)

    env = None
    report = new_report(None)
    try:
        env = RankEnv()
        report.update(rank=env.rank, local_rank=env.local_rank, world_size=env.world_size)
        report["steps"] = StreamedSteps(os.path.join(args.out, f"rank{env.rank}.steps.jsonl"))
        cfg = load_config(args.config)
        run(cfg, env, report)
    except BaseException as e:  # KeyboardInterrupt/SystemExit too: the report must say why
        # When, so that of several failed ranks the first in time is named (results.h failed_at).
        report["failed_at"] = time.time()
        report["status"] = "failed"
        report["error"] = error_text(e) or type(e).__name__
        if os.environ.get("DDPBENCH_HF_TRACEBACK"):
            traceback.print_exc()
        try:
            write_report(args.out, report)
        except Exception as w:
            print(f"rank {report['rank']}: cannot write the report: {w}", file=sys.stderr, flush=True)
        print(f"rank {report['rank']} failed in {report['phase']}: {report['error']}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        _shutdown_best_effort()
        # The traceback holds the model, DDP and a process group whose worker threads may sit in a
        # collective that a failed peer never joins: freeing them could block until the collective
        # timeout. Keep them alive; exit_rank leaves without running destructors.
        _KEEP_ALIVE.append(e)
        return 1
    write_report(args.out, report)
    return 0


def exit_rank(status):
    """Ends the process with rank_main's status; a failed rank leaves without destructors (see rank_main)."""
    if status != 0:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
