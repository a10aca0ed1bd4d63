"""CPU tests of the hand-written Transformers + PEFT loop (harness/hf/hf_loop.py, trainer hf-loop).

The loss rule's equivalence through Transformers + PEFT + torch DDP: 2 ranks x 3 micro-batches of 2
sequences must give the same per-step losses as 1 rank with one micro-batch of 12, on documents of
different lengths (some cut to seq_len, most padded), in full and LoRA modes.
"""

import importlib.util
import json
import os
import random
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the hf trainer needs torch")
transformers = pytest.importorskip("transformers", reason="the hf trainer needs transformers (pip install transformers)")
peft = pytest.importorskip("peft", reason="the hf trainer needs peft (pip install peft)")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "harness" / "hf" / "hf_loop.py"
sys.path.insert(0, str(SCRIPT.parent))
import rank_common  # noqa: E402
VOCAB = 256
SEQ_LEN = 32

REPORT_KEYS = {
    "schema_version": int, "rank": int, "local_rank": int, "world_size": int, "host": str, "device": str,
    "status": str, "phase": str, "error": str, "failed_at": float, "setup_s": float, "buckets": int, "bucket_bytes": int,
    "parameters": int, "trainable_parameters": int, "optimizer_state_bytes": int, "matmul_bf16_flops": float,
    "packages": dict, "steps": list,
}
STEP_KEYS = {
    "step": int, "warmup": bool, "loss": float, "tokens": int, "padded_tokens": int, "predicted_tokens": int,
    "global_predicted_tokens": int, "step_time_s": float, "grad_norm": float, "mem_allocated_peak": int,
    "mem_reserved_peak": int,
}


def write_token_file(path, vocab, documents):
    """The "ddpbench tokens v1" format of harness/train/token_file.h."""
    total = sum(len(d) for d in documents)
    with open(path, "wb") as f:
        f.write(struct.pack("<8sIIQQ", b"DDPBTOK1", 1, vocab, len(documents), total))
        f.write(struct.pack(f"<{len(documents)}I", *(len(d) for d in documents)))
        for d in documents:
            f.write(struct.pack(f"<{len(d)}I", *d))


def load_trainer_module():
    spec = importlib.util.spec_from_file_location("hf_loop", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    shape = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=128,
                        tie_word_embeddings=False, rms_norm_eps=1e-5)
    base = LlamaForCausalLM(shape)
    base.save_pretrained(root / "base")

    # A checkpoint with a PEFT adapter beside the weights; B drawn non-zero so that the adapter
    # already matters at step 0 and a wrong load would show.
    from peft import LoraConfig, get_peft_model

    lora_base = LlamaForCausalLM(shape)
    lora_base.save_pretrained(root / "lora")  # the base weights, before PEFT wraps the modules
    lora_model = get_peft_model(lora_base.eval(), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0, bias="none",
        task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in lora_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    lora_model.save_pretrained(root / "lora")  # the adapter beside them
    assert (root / "lora" / "adapter_config.json").is_file()
    assert (root / "lora" / "model.safetensors").is_file()

    # Uneven documents: 2..48 tokens against seq_len 32 (some cut, most padded); 30 documents, so
    # the 3 steps x 12 rows wrap around the file.
    rng = random.Random(1)
    docs = [[rng.randrange(1, VOCAB) for _ in range(rng.randint(2, 48))] for _ in range(30)]
    write_token_file(root / "tokens.bin", VOCAB, docs)
    return root


def config(root, ckpt, mode, nproc, micro_batch, grad_accum, **extra):
    cfg = {
        "trainer": "hf-loop", "preset": "tiny", "mode": mode, "impl": "baseline", "device": "cpu", "nproc": nproc,
        "micro_batch": micro_batch, "grad_accum": grad_accum, "seq_len": SEQ_LEN, "lengths": "fixed",
        "steps": 2, "warmup": 1, "seed": 0, "lr": 1e-3, "weight_decay": 0.01, "max_grad_norm": 1.0,
        "lora_rank": 4, "lora_alpha": 8.0, "lora_targets": ["q_proj", "v_proj"], "loss_norm": "global-tokens",
        "bucket_cap_mb": 1, "timeout_s": 300, "data": "markov", "data_file": str(root / "tokens.bin"),
        "checkpoint": str(root / ckpt), "grad_ckpt": False,
        "global_batch_sequences": nproc * micro_batch * grad_accum,
    }
    cfg.update(extra)
    return cfg


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(cell, cfg, timeout=240, script=SCRIPT):
    """Starts cfg["nproc"] ranks as the launcher does; returns (exit codes, rank reports, rank 0 stdout)."""
    cell.mkdir(parents=True, exist_ok=True)
    (cell / "config.json").write_text(json.dumps(cfg))
    world, port = cfg["nproc"], free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                   LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        procs.append(subprocess.Popen(
            [sys.executable, str(script), "--config", str(cell / "config.json"), "--out", str(cell / "ranks")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs, timed_out = [], False
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=timeout))
        except subprocess.TimeoutExpired:
            timed_out = True
            for q in procs:
                if q.poll() is None:
                    q.kill()
            outputs.append(p.communicate())
    codes = [p.returncode for p in procs]
    assert not timed_out, f"ranks still running after {timeout} s; stderr tails: " + " || ".join(
        o[1][-800:] for o in outputs)
    reports = []
    for rank in range(world):
        path = cell / "ranks" / f"rank{rank}.json"
        reports.append(json.loads(path.read_text()) if path.exists() else None)
    return codes, reports, outputs


def check_schema(report):
    assert set(report) == set(REPORT_KEYS)
    for key, kind in REPORT_KEYS.items():
        assert isinstance(report[key], kind), (key, report[key])
    assert report["schema_version"] == 1
    for step in report["steps"]:
        assert set(step) == set(STEP_KEYS)
        for key, kind in STEP_KEYS.items():
            value = step[key]
            if kind is float:
                assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
            else:
                assert isinstance(value, kind) and (kind is bool or not isinstance(value, bool)), (key, value)


def b0_reference(root, checkpoint):
    """The loss of step 0's 12 rows through model(input_ids, labels=...).loss, the adapter (if any)
    loaded into a clean copy of the base weights."""
    from transformers import AutoModelForCausalLM

    hf = rank_common
    folder = root / checkpoint
    has_adapter = (folder / "adapter_config.json").is_file()
    with hf.base_model_folder(str(folder), has_adapter) as base:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, attn_implementation="sdpa")
    if has_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(folder))
    data = hf.TokenFile(str(root / "tokens.bin"))
    tokens, labels, _ = data.rows(0, 12, 0, 12, SEQ_LEN)
    data.close()
    with torch.no_grad():
        return float(model(input_ids=tokens, labels=labels, use_cache=False).loss)


@pytest.mark.parametrize("mode,checkpoint", [("full", "base"), ("lora", "lora")])
def test_two_ranks_match_one_rank(workdir, mode, checkpoint):
    two = config(workdir, checkpoint, mode, nproc=2, micro_batch=2, grad_accum=3)
    one = config(workdir, checkpoint, mode, nproc=1, micro_batch=12, grad_accum=1)
    codes2, reports2, out2 = launch(workdir / f"{mode}-2", two)
    codes1, reports1, out1 = launch(workdir / f"{mode}-1", one)
    assert codes2 == [0, 0], [o[1][-2000:] for o in out2]
    assert codes1 == [0], out1[0][1][-2000:]

    for r, report in enumerate(reports2 + reports1):
        check_schema(report)
        # fp32 weights on the CPU: two fp32 moments per trainable weight, no master copies.
        assert report["optimizer_state_bytes"] == 8 * report["trainable_parameters"]
        assert report["status"] == "ok" and report["error"] == ""
        assert report["device"] == "cpu"
        assert report["matmul_bf16_flops"] == 0.0  # measured on GPUs only: no MFU on the CPU
        assert len(report["steps"]) == 3
        assert [s["warmup"] for s in report["steps"]] == [True, False, False]
    # Each step was also streamed as it was measured (what survives a rank killed mid-run).
    for r in (0, 1):
        streamed = (workdir / f"{mode}-2" / "ranks" / f"rank{r}.steps.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in streamed] == reports2[r]["steps"]
    assert [r["rank"] for r in reports2] == [0, 1] and reports2[0]["world_size"] == 2
    assert reports2[0]["parameters"] == reports1[0]["parameters"]
    assert reports2[0]["trainable_parameters"] == reports1[0]["trainable_parameters"]
    if mode == "full":
        assert reports1[0]["trainable_parameters"] == reports1[0]["parameters"]
    else:
        # The adapter of the checkpoint (q, v and down projections, r 4) wins over lora_targets.
        lora = 2 * (4 * (64 + 64) + 4 * (64 + 32) + 4 * (128 + 64))
        assert reports1[0]["trainable_parameters"] == lora

    # Rank 0 prints the built-in trainer's live line.
    lines = [l for l in out2[0][0].splitlines() if l.startswith("step ")]
    assert len(lines) == 3 and lines[0].startswith("step    1/3 (warmup) | loss ")
    assert out2[1][0].strip() == ""

    for step in range(3):
        a = [r["steps"][step] for r in reports2]
        b = reports1[0]["steps"][step]
        # The same global batch: token counts agree, summed over ranks.
        assert sum(s["tokens"] for s in a) == b["tokens"]
        assert sum(s["padded_tokens"] for s in a) == b["padded_tokens"] == 12 * SEQ_LEN
        assert sum(s["predicted_tokens"] for s in a) == b["predicted_tokens"] == b["global_predicted_tokens"]
        assert a[0]["global_predicted_tokens"] == a[1]["global_predicted_tokens"] == b["global_predicted_tokens"]
        assert b["tokens"] < b["padded_tokens"]
        # The loss is identical on all ranks, and equal to the single rank's.
        assert a[0]["loss"] == a[1]["loss"]
        assert a[0]["loss"] == pytest.approx(b["loss"], rel=1e-5), (mode, step)
        assert a[0]["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4), (mode, step)
    # Step 0 (weights as loaded) is Transformers' own mean token loss over the global batch.
    assert b0_reference(workdir, checkpoint) == pytest.approx(reports1[0]["steps"][0]["loss"], rel=1e-5)
    # The steps trained something (the loss after two updates differs from the first).
    assert reports1[0]["steps"][2]["loss"] != reports1[0]["steps"][0]["loss"]


def test_missing_checkpoint_fails_clearly(workdir):
    cfg = config(workdir, "base", "full", nproc=1, micro_batch=2, grad_accum=1, checkpoint="")
    codes, reports, outputs = launch(workdir / "no-checkpoint", cfg)
    assert codes == [1]
    report = reports[0]
    check_schema(report)
    assert report["status"] == "failed" and report["phase"] == "setup"
    assert "checkpoint" in report["error"]
    assert "failed in setup" in outputs[0][1]


def test_token_file_mapping(workdir):
    hf = rank_common
    data = hf.TokenFile(str(workdir / "tokens.bin"))
    assert data.documents == 30 and data.vocab == VOCAB
    rng = random.Random(1)
    docs = [[rng.randrange(1, VOCAB) for _ in range(rng.randint(2, 48))] for _ in range(30)]
    # Step 2 of a global batch of 12: rows 4..7 are documents (24 + 4 + i) mod 30 = 28, 29, 0, 1.
    tokens, labels, lengths = data.rows(2, 12, 4, 4, SEQ_LEN)
    assert tokens.shape == labels.shape == (4, SEQ_LEN)
    for i, d in enumerate([28, 29, 0, 1]):
        doc = docs[d][:SEQ_LEN]
        assert lengths[i] == len(doc)
        assert tokens[i, :len(doc)].tolist() == doc and labels[i, :len(doc)].tolist() == doc
        assert tokens[i, len(doc):].eq(0).all() and labels[i, len(doc):].eq(-100).all()
    assert data.row_lengths(2, 12, 4, 4, SEQ_LEN) == lengths
    data.close()


def adamw_fp64(p0, grads, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    """AdamW written out in fp64, as torch.optim.AdamW defines it."""
    import torch

    p, m, v = p0.double(), torch.zeros_like(p0, dtype=torch.float64), torch.zeros_like(p0, dtype=torch.float64)
    for t, g in enumerate(grads, start=1):
        g = g.double()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p * (1 - lr * wd) - (lr / (1 - b1**t)) * m / (v.sqrt() / (1 - b2**t) ** 0.5 + eps)
    return p


@pytest.mark.parametrize("scratch_elems", [5, 1 << 25])
def test_master_weight_adamw_follows_fp64_reference(scratch_elems):
    """optim_state fp32 on bf16 weights: the master follows fp64 AdamW, the weight is its rounding,
    whatever pieces the scratch cuts the parameters into; the built-in trainer's tests check the same."""
    torch = pytest.importorskip("torch")
    mod = load_trainer_module()
    gen = torch.Generator().manual_seed(5)
    shapes = [(10, 3), (3,), (4, 5)]
    params = [torch.randn(s, generator=gen).bfloat16().requires_grad_() for s in shapes]
    starts = [p.detach().float().clone() for p in params]
    opt = mod.MasterWeightAdamW(torch, params, lr=1e-3, weight_decay=0.1, scratch_elems=scratch_elems)
    grads = [[torch.randn(s, generator=gen) for _ in range(4)] for s in shapes]
    for step in range(4):
        for p, g in zip(params, grads):
            p.grad = g[step].bfloat16()
        opt.step()
    for i, (p, master, _, _) in enumerate(opt.state):
        ref = adamw_fp64(starts[i], [g.bfloat16() for g in grads[i]], 1e-3, 0.1)
        rel = ((master.double() - ref).abs() / (ref.abs() + 1e-3)).max().item()
        assert master.dtype == torch.float32 and rel < 1e-5, f"parameter {i}: {rel}"
        assert torch.equal(p.detach(), master.bfloat16()), f"parameter {i}: weight is not its master rounded"


def test_step_line_shows_mfu_only_with_a_measured_rate(capsys):
    hf = rank_common
    cfg = {"warmup": 1, "steps": 2, "model_flops_per_token": 2.0e9}
    sample = {"step": 1, "warmup": False, "loss": 2.5, "step_time_s": 0.5, "mem_allocated_peak": 1 << 30,
              "global_predicted_tokens": 4094, "grad_norm": 1.25}
    # 8192 tokens in 0.5 s over 2 ranks: 8192 tok/s per rank x 2e9 FLOP = 16.4 TFLOP/s of 100.
    hf.print_step_line(cfg, sample, 8192, 2, 100e12)
    line = capsys.readouterr().out
    assert "| mfu 16.4% |" in line, line
    hf.print_step_line(cfg, sample, 8192, 2, 0.0)
    assert "mfu" not in capsys.readouterr().out
    hf.print_step_line({"warmup": 1, "steps": 2}, sample, 8192, 2, 100e12)
    assert "mfu" not in capsys.readouterr().out


def test_non_finite_step_is_refused_naming_the_step():
    """The check both Python trainers run after every step (hf_loop, StepRecorder.step_end)."""
    rank_common.check_finite_step(3, 2.5, 1.0)
    rank_common.check_finite_step(3, 2.5, None)  # no norm computed: only the loss is checked
    with pytest.raises(RuntimeError, match="non-finite loss at step 4 "):
        rank_common.check_finite_step(4, float("nan"), 1.0)
    with pytest.raises(RuntimeError, match="non-finite gradient norm at step 5 "):
        rank_common.check_finite_step(5, 2.5, float("inf"))
