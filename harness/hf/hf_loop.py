#!/usr/bin/env python3
"""A hand-written Transformers + PEFT + torch DDP training loop (trainer `hf-loop`): a diagnostic.

It does exactly what the built-in trainer does (harness/train/trainer.cpp), step by step, on the same
weights and token batches, with the same optimizer (MasterWeightAdamW for optim_state fp32) and loss
rule, so that a difference between the two is a difference of kernels, not of method. Nobody
fine-tunes this way: the baselines users run are in peer_trainers.py (`hf`, `liger`, `unsloth`).

One rank, started by ddpbench's launcher (or torchrun):

    python3 harness/hf/hf_loop.py --config CELL/config.json --out CELL/ranks

Exit status: 0 on success, 1 on failure (after writing the failed report).
"""

import contextlib
import os
import sys
import time
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rank_common import (IGNORE_INDEX, ConfigError, NvtxRanges, TokenFile, T_START,  # noqa: E402
                         base_model_folder, bucket_layout, check_finite_step, check_loaded, exit_rank, lr_at,
                         measure_bf16_matmul_flops, memory_peaks, prepare_rendezvous_env, print_step_line, rank_main,
                         select_device)


def loss_scale(rule, world, grad_accum, n_global, n_rank, n_micro):
    """The per-micro-batch factor on the summed token loss (loss_scale in trainer.cpp)."""
    if rule == "global-tokens":
        return world / n_global
    if rule == "mean-of-micro-means":
        return 1.0 / (n_micro * grad_accum)
    return 1.0 / n_rank  # local-tokens


class MasterWeightAdamW:
    """AdamW keeping fp32 master weights and fp32 moments for low-precision parameters (optim_state
    fp32): the built-in trainer's update (train/adamw.cpp), made the same way: the bf16 gradient is
    copied to fp32 in bounded pieces, torch's fused AdamW kernel updates the master slice, and the
    master is rounded back into the bf16 weight. fp32 parameters are updated in place."""

    def __init__(self, torch, params, lr, weight_decay, scratch_elems=1 << 25):
        self.torch, self.weight_decay = torch, float(weight_decay)
        self.param_groups = [{"lr": float(lr)}]  # what the training loop sets each step
        self.direct, self.chunks, self.state = [], [], []
        fill, widest = scratch_elems, 0
        with torch.no_grad():
            for p in params:
                master = p if p.dtype in (torch.float32, torch.float64) else p.detach().float()
                m, v = torch.zeros_like(master), torch.zeros_like(master)
                self.state.append((p, master, m, v))
                if master is p:
                    self.direct.append((p, m, v, torch.zeros((), dtype=torch.float32, device=p.device)))
                    continue
                offset = 0
                while offset < p.numel():
                    if fill >= scratch_elems:
                        self.chunks.append([])
                        fill = 0
                    length = min(p.numel() - offset, scratch_elems - fill)
                    self.chunks[-1].append((p, master, m, v, offset, length,
                                            torch.zeros((), dtype=torch.float32, device=p.device)))
                    offset += length
                    fill += length
                    widest = max(widest, fill)
        self.scratch = (torch.empty(widest, dtype=torch.float32, device=params[0].device) if widest else None)

    def _fused(self, params, grads, ms, vs, steps):
        torch = self.torch
        torch._foreach_add_(steps, 1)  # the kernel reads the count but leaves counting to the caller
        torch._fused_adamw_(params, grads, ms, vs, [], steps, lr=self.param_groups[0]["lr"], beta1=0.9,
                            beta2=0.999, weight_decay=self.weight_decay, eps=1e-8, amsgrad=False, maximize=False)

    def step(self):
        torch = self.torch
        with torch.no_grad():
            if self.direct:
                ps, ms, vs, steps = (list(x) for x in zip(*self.direct))
                self._fused(ps, [p.grad for p in ps], ms, vs, steps)
            for chunk in self.chunks:
                weights, masters, grads, grads32, ms, vs, steps = [], [], [], [], [], [], []
                fill = 0
                for p, master, m, v, offset, length, step in chunk:
                    piece = lambda t: t.view(-1).narrow(0, offset, length)  # noqa: E731
                    weights.append(piece(p))
                    masters.append(piece(master))
                    grads.append(piece(p.grad))
                    grads32.append(self.scratch.narrow(0, fill, length))
                    ms.append(piece(m))
                    vs.append(piece(v))
                    steps.append(step)
                    fill += length
                torch._foreach_copy_(grads32, grads)
                self._fused(masters, grads32, ms, vs, steps)
                torch._foreach_copy_(weights, masters)

    def zero_grad(self, set_to_none=False):
        for p, *_ in self.state:
            if p.grad is not None:
                p.grad.zero_()

    def state_bytes(self):
        total = self.scratch.nbytes if self.scratch is not None else 0
        for p, master, m, v in self.state:
            total += m.nbytes + v.nbytes + (0 if master is p else master.nbytes)
        return total


def make_optimizer(torch, trainable, cfg):
    """optim_state fp32: MasterWeightAdamW; param: torch.optim.AdamW (state in the parameter's
    dtype, what a bf16 model gets from it)."""
    if cfg["optim_state"] == "fp32":
        return MasterWeightAdamW(torch, trainable, cfg["lr"], cfg["weight_decay"])
    return torch.optim.AdamW(trainable, lr=float(cfg["lr"]), betas=(0.9, 0.999), eps=1e-8,
                             weight_decay=float(cfg["weight_decay"]), fused=True)


def optimizer_state_bytes(optimizer):
    if isinstance(optimizer, MasterWeightAdamW):
        return optimizer.state_bytes()
    # torch.optim creates its state lazily, at the first step: count what it will hold.
    return sum(2 * p.numel() * p.element_size() for g in optimizer.param_groups for p in g["params"])


def run(cfg, env, report):
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    cuda, device = select_device(torch, cfg, env, report)
    dtype = torch.bfloat16 if cuda else torch.float32

    data = TokenFile(cfg["data_file"])
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # rank logs are files: no progress bars in them

    checkpoint = cfg["checkpoint"]
    has_adapter = os.path.isfile(os.path.join(checkpoint, "adapter_config.json"))
    # On a GPU the weights load straight onto it (one device: no dispatch hooks), not through host memory.
    with base_model_folder(checkpoint, has_adapter) as base_folder:
        model, loading = AutoModelForCausalLM.from_pretrained(
            base_folder, dtype=dtype, attn_implementation="sdpa", device_map={"": env.local_rank} if cuda else None,
            output_loading_info=True)
    check_loaded(loading, checkpoint)
    model.config.use_cache = False
    vocab = int(model.config.vocab_size)
    if data.vocab > vocab:
        raise ConfigError(f"data_file {cfg['data_file']}: vocabulary {data.vocab} is larger than the model's {vocab}")
    if cfg["grad_ckpt"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg["mode"] == "lora":
        from peft import LoraConfig, PeftModel, get_peft_model

        if cfg["grad_ckpt"]:
            model.enable_input_require_grads()
        if has_adapter:
            model = PeftModel.from_pretrained(model, checkpoint, is_trainable=True)
        else:
            torch.manual_seed(int(cfg.get("seed", 0)))  # DDP broadcasts rank 0's adapters anyway
            lora = LoraConfig(r=cfg["lora_rank"], lora_alpha=cfg["lora_alpha"], target_modules=list(cfg["lora_targets"]),
                              lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
            model = get_peft_model(model, lora)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    model.to(device)
    model.train()
    report["parameters"] = sum(p.numel() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    report["trainable_parameters"] = sum(p.numel() for p in trainable)
    if not trainable:
        raise ConfigError(f"checkpoint {checkpoint}: no trainable parameters in mode {cfg['mode']}")

    report["phase"] = "rendezvous"
    prepare_rendezvous_env(env.world_size)
    timeout = timedelta(seconds=cfg["timeout_s"])
    if cuda:
        dist.init_process_group("nccl", rank=env.rank, world_size=env.world_size, timeout=timeout, device_id=device)
    else:
        dist.init_process_group("gloo", rank=env.rank, world_size=env.world_size, timeout=timeout)
    # DDP's construction broadcasts rank 0's weights, so every rank starts from the same ones.
    ddp_model = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[env.local_rank] if cuda else None, bucket_cap_mb=cfg["bucket_cap_mb"],
        gradient_as_bucket_view=True)
    optimizer = make_optimizer(torch, trainable, cfg)
    report["optimizer_state_bytes"] = optimizer_state_bytes(optimizer)
    if cuda:
        torch.cuda.synchronize(device)
    report["setup_s"] = time.perf_counter() - T_START
    # The MFU denominator, measured on this GPU before the first step (DESIGN.md).
    if cuda:
        report["matmul_bf16_flops"] = measure_bf16_matmul_flops(torch, device)

    W, G, mb = env.world_size, cfg["grad_accum"], cfg["micro_batch"]
    seq_len, rule, max_norm = cfg["seq_len"], cfg["loss_norm"], float(cfg["max_grad_norm"])
    # The global batch counts all ranks (nproc per node x nodes), as BatchSource::make does.
    global_batch = W * mb * G
    total = cfg["warmup"] + cfg["steps"]
    ranges = NvtxRanges(cuda)
    for step in range(total):
        report["phase"] = f"step {step}"
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        # The same NVTX phase ranges as the built-in trainer, so that `ddpbench profile
        # --step-marker step` can cut this trainer's trace into steps the same way.
        ranges.push("step")
        ranges.push("data")
        micro = []
        n_rank = real_rank = 0
        for m in range(G):
            first = (env.rank * G + m) * mb
            tokens, labels, lengths = data.rows(step, global_batch, first, mb, seq_len)
            top = int(tokens.max())
            if top >= vocab:
                raise ConfigError(f"data_file {cfg['data_file']}: token id {top} is outside the model's vocabulary {vocab}")
            n_micro = sum(n - 1 for n in lengths)
            micro.append((tokens.to(device), labels.to(device), lengths, n_micro))
            n_rank += n_micro
            real_rank += sum(lengths)
        # N, the loss's divisor, counted once per optimizer step over all ranks and micro-batches;
        # the global count of real tokens rides along for the live log.
        counts = torch.tensor([n_rank, real_rank], dtype=torch.int64, device=device)
        dist.all_reduce(counts)
        n_global, real_global = (int(x) for x in counts.cpu().tolist())
        ranges.pop()

        optimizer.zero_grad(set_to_none=False)
        loss_acc = torch.zeros((), dtype=torch.float64, device=device)
        sample = {"step": step, "warmup": step < cfg["warmup"], "loss": 0.0, "tokens": 0, "padded_tokens": 0,
                  "predicted_tokens": n_rank, "global_predicted_tokens": n_global, "step_time_s": 0.0,
                  "grad_norm": 0.0, "mem_allocated_peak": 0, "mem_reserved_peak": 0}
        for m, (tokens, labels, lengths, n_micro) in enumerate(micro):
            scale = loss_scale(rule, W, G, n_global, n_rank, n_micro)
            sync = m == G - 1
            with ddp_model.no_sync() if not sync else contextlib.nullcontext():
                # No labels (the loss is computed here, summed) and no attention mask: right padding
                # under causal attention, as in the built-in trainer.
                ranges.push("forward")
                logits = ddp_model(input_ids=tokens, use_cache=False).logits
                # Shift the labels, not the logits (LlamaModel::loss_sum).
                shifted = torch.cat([labels[:, 1:], torch.full((labels.size(0), 1), IGNORE_INDEX,
                                                               dtype=labels.dtype, device=device)], dim=1)
                loss_sum = F.cross_entropy(logits.float().view(-1, logits.size(-1)), shifted.view(-1),
                                           ignore_index=IGNORE_INDEX, reduction="sum")
                ranges.pop()
                ranges.push("backward")
                (loss_sum * scale).backward()
                ranges.pop()
            # What this rank adds to the step's loss once DDP has averaged over ranks.
            loss_acc += loss_sum.detach().double() * (scale / W)
            del logits, loss_sum
            sample["tokens"] += sum(lengths)
            sample["padded_tokens"] += tokens.numel()
        ranges.push("optimizer")
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, step)
        if max_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(trainable, max_norm)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in trainable])
        optimizer.step()
        ranges.pop()
        dist.all_reduce(loss_acc)
        sample["loss"] = float(loss_acc.item())
        sample["grad_norm"] = float(norm.item())
        if cuda:
            torch.cuda.synchronize(device)
        sample["step_time_s"] = time.perf_counter() - t0
        ranges.pop()
        sample["mem_allocated_peak"], sample["mem_reserved_peak"] = memory_peaks(torch, cuda, device)
        report["steps"].append(sample)
        if env.rank == 0:
            print_step_line(cfg, sample, real_global, W, report["matmul_bf16_flops"])
        check_finite_step(step, sample["loss"], sample["grad_norm"])

    # DDP rebuilds its buckets after the first iteration: read the layout it ended with.
    report["buckets"], report["bucket_bytes"] = bucket_layout(ddp_model)
    report["phase"] = "shutdown"
    dist.barrier()  # no rank tears down while a peer still finishes its last collective
    dist.destroy_process_group()
    # DDP's reducer still holds the process group; it is destroyed when ddp_model is freed, and
    # ~ProcessGroupGloo joins its worker threads while holding the GIL. A worker that is still
    # releasing the tensors of a finished collective (our Python tensors: that takes the GIL) would
    # deadlock that join, so the main thread lets go of the GIL for a moment first.
    time.sleep(0.2)
    del ddp_model, model, optimizer, trainable
    report["phase"] = "done"




def main(argv=None):
    return rank_main("ddpbench hf-loop trainer (a hand-written Transformers + PEFT + torch DDP loop), one rank",
                     run, argv)


if __name__ == "__main__":
    exit_rank(main())
