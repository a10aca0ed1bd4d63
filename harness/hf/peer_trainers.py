#!/usr/bin/env python3
"""The baselines users actually run, under ddpbench's launcher, on ddpbench's equal-work inputs.

    hf       transformers.Trainer + PEFT, configured as Hugging Face's documentation configures it:
             TrainingArguments with bf16, batch, gradient accumulation, learning rate, warm-up,
             optim="adamw_torch_fused", max_grad_norm, gradient_checkpointing and
             average_tokens_across_devices=True; DDP from the torchrun environment.
    liger    the same Trainer with use_liger_kernel=True (Liger-Kernel's Triton kernels).
    unsloth  Unsloth as its documentation runs it: FastLanguageModel.from_pretrained (bf16, no 4-bit),
             get_peft_model (or full_finetuning=True), TRL's SFTTrainer as Unsloth patches it.

One rank, started by ddpbench's launcher (or torchrun):

    python3 harness/hf/peer_trainers.py --config CELL/config.json --out CELL/ranks
    python3 harness/hf/peer_trainers.py --check-packages TRAINER   # exit 3 and a reason when missing

What ddpbench adds to the Trainer, and only that: a dataset over the prepared token file that serves
each rank exactly the built-in trainer's batches, the built-in trainer's learning-rate schedule (a
LambdaLR), a callback that times each optimizer step with the device synchronised, records the
loss, token counts, gradient norm and memory peaks, and marks the phases with NVTX ranges, and the
rank report of harness/results/results.h. Nothing in the training step itself is replaced.

The loss rule (DESIGN.md) is the Trainer's own with average_tokens_across_devices=True: every
micro-batch's summed token loss over N, the predicted tokens of the whole optimizer step on all
ranks, times the world size (undone by DDP's mean). The two wrong variants users hit are the
Trainer's own settings too: loss_norm local-tokens is average_tokens_across_devices=False, and
mean-of-micro-means is a model that takes no loss kwargs (the Trainer before 4.46).
"""

import importlib.util
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rank_common import (ConfigError, NvtxRanges, TokenFile, T_START, base_model_folder,  # noqa: E402
                         bucket_layout, check_finite_step, check_loaded, exit_rank, lr_at, measure_bf16_matmul_flops, memory_peaks,
                         prepare_rendezvous_env, print_step_line, rank_main, select_device)

PEER_TRAINERS = ("hf", "liger", "unsloth")
# Import names a trainer needs, and the distribution that brings each (what to install).
TRAINER_PACKAGES = {
    "hf": [("transformers", "transformers"), ("peft", "peft"), ("accelerate", "accelerate")],
    "liger": [("transformers", "transformers"), ("peft", "peft"), ("accelerate", "accelerate"),
              ("liger_kernel", "liger-kernel")],
    "unsloth": [("unsloth", "unsloth"), ("unsloth_zoo", "unsloth_zoo"), ("trl", "trl"), ("datasets", "datasets"),
                ("transformers", "transformers"), ("peft", "peft"), ("accelerate", "accelerate")],
}
EXIT_MISSING_PACKAGES = 3


def missing_packages(trainer):
    """Distributions of `trainer` that are not installed (found without importing them)."""
    return [dist for module, dist in TRAINER_PACKAGES[trainer] if importlib.util.find_spec(module) is None]


# --------------------------------------------------------------------------------------------
# Equal-work data


class EqualWorkDataset:
    """The built-in trainer's batches in the order the Trainer reads them.

    The Trainer reads a map-style dataset through a sequential sampler in batches of micro_batch
    rows; accelerate's BatchSamplerShard hands batch k*W + r to rank r as its k-th batch, and the
    Trainer takes G consecutive batches of a rank for one optimizer step. So position
    p = ((s*G + m)*W + r)*mb + i is row i of micro-batch m of rank r in step s, which the built-in
    trainer reads as global-batch row (r*G + m)*mb + i of step s (TokenFile.rows).
    """

    def __init__(self, data, vocab, steps, world, grad_accum, micro_batch, seq_len):
        self.data, self.vocab, self.steps = data, vocab, steps
        self.world, self.grad_accum, self.micro_batch, self.seq_len = world, grad_accum, micro_batch, seq_len
        self.global_batch = world * grad_accum * micro_batch

    def __len__(self):
        return self.steps * self.global_batch

    def locate(self, position):
        """(step, global-batch row) of a position in the Trainer's order."""
        i = position % self.micro_batch
        q = position // self.micro_batch
        rank, k = q % self.world, q // self.world
        micro, step = k % self.grad_accum, k // self.grad_accum
        return step, (rank * self.grad_accum + micro) * self.micro_batch + i

    def __getitem__(self, position):
        if not 0 <= position < len(self):
            raise IndexError(position)
        step, row = self.locate(position)
        tokens, labels, _ = self.data.rows(step, self.global_batch, row, 1, self.seq_len)
        top = int(tokens.max())
        if top >= self.vocab:
            raise ConfigError(f"data_file {self.data.path}: token id {top} is outside the model's vocabulary {self.vocab}")
        # No attention mask: right padding under causal attention, as in the built-in trainer.
        return {"input_ids": tokens[0], "labels": labels[0]}

    def as_datasets_dataset(self):
        """The rows as a Hugging Face `datasets.Dataset` in this order (columns input_ids, labels),
        for trainers that take nothing else (TRL's SFTTrainer)."""
        import datasets

        rows = [self[p] for p in range(len(self))]
        return datasets.Dataset.from_dict({key: [row[key].tolist() for row in rows] for key in ("input_ids", "labels")})

    def counts(self, step, rank):
        """(real tokens, predicted tokens) of a rank in a step, from the documents' lengths alone."""
        first = rank * self.grad_accum * self.micro_batch
        lengths = self.data.row_lengths(step, self.global_batch, first, self.grad_accum * self.micro_batch, self.seq_len)
        return sum(lengths), sum(n - 1 for n in lengths)


# --------------------------------------------------------------------------------------------
# Models


def model_dtype(torch, cfg):
    """bf16 weights (optimizer state in bf16, as torch.optim gives a bf16 model) for optim_state
    param; fp32 weights under bf16 autocast (the Trainer's mixed precision) for fp32; fp32 on the CPU."""
    if cfg["device"] != "cuda" or cfg["optim_state"] == "fp32":
        return torch.float32
    return torch.bfloat16


def load_hf_model(torch, cfg, env, cuda):
    from transformers import AutoModelForCausalLM

    checkpoint = cfg["checkpoint"]
    has_adapter = os.path.isfile(os.path.join(checkpoint, "adapter_config.json"))
    with base_model_folder(checkpoint, has_adapter) as base_folder:
        model, loading = AutoModelForCausalLM.from_pretrained(
            base_folder, dtype=model_dtype(torch, cfg), attn_implementation="sdpa",
            device_map={"": env.local_rank} if cuda else None, output_loading_info=True)
    check_loaded(loading, checkpoint)
    model.config.use_cache = False
    if cfg["mode"] == "lora":
        from peft import LoraConfig, PeftModel, get_peft_model

        if has_adapter:
            model = PeftModel.from_pretrained(model, checkpoint, is_trainable=True)
        else:
            torch.manual_seed(int(cfg.get("seed", 0)))
            model = get_peft_model(model, LoraConfig(
                r=cfg["lora_rank"], lora_alpha=cfg["lora_alpha"], target_modules=list(cfg["lora_targets"]),
                lora_dropout=0.0, bias="none", task_type="CAUSAL_LM"))
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    return model


def import_unsloth_first():
    """Unsloth patches Transformers, PEFT and TRL when imported, so it must come before them; offline
    and with its usage statistics off (they download repositories), its compile cache out of the
    working directory."""
    for name, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("UNSLOTH_DISABLE_STATISTICS", "1")):
        os.environ.setdefault(name, value)
    os.environ.setdefault("UNSLOTH_COMPILE_LOCATION", tempfile.mkdtemp(prefix="ddpbench-unsloth-compile-"))
    if "transformers" in sys.modules:
        raise ConfigError("unsloth: transformers was imported before unsloth (unsloth must patch it first)")
    import unsloth  # noqa: F401

    # Unsloth's model patching imports bitsandbytes' and PEFT's 4-bit linear classes to check layers
    # against them. Without bitsandbytes (4-bit loading is off here) those names must still exist:
    # placeholder modules holding a class that no layer is an instance of, set after `import
    # unsloth` and marked as Unsloth's own stub, so that neither Unsloth nor Transformers takes
    # bitsandbytes for installed (they find a spec with no loader, no version and no file).
    if importlib.util.find_spec("bitsandbytes") is None:
        from importlib import machinery
        import types

        import peft.tuners.lora as lora

        class Linear4bit:  # a placeholder: nothing is ever an instance of it
            pass

        def placeholder_module(name):
            module = types.ModuleType(name)
            module.__spec__ = machinery.ModuleSpec(name, loader=None)
            module.IS_UNSLOTH_STUB = True
            return module

        bnb, bnb_nn = placeholder_module("bitsandbytes"), placeholder_module("bitsandbytes.nn")
        bnb_nn.Linear4bit = Linear4bit
        bnb.nn = bnb_nn
        sys.modules.setdefault("bitsandbytes", bnb)
        sys.modules.setdefault("bitsandbytes.nn", bnb_nn)
        if not hasattr(lora, "Linear4bit"):
            lora.Linear4bit = Linear4bit


def write_minimal_tokenizer(folder):
    """Unsloth loads a tokenizer with every model; the prepared checkpoints hold token ids, not text,
    so a four-token word-level tokenizer is enough (no token beyond the model's vocabulary, so
    nothing is resized)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                            pad_token="<pad>").save_pretrained(folder)


def load_unsloth_model(torch, cfg, env, cuda):
    if not cuda:
        raise ConfigError("unsloth runs on NVIDIA GPUs only (device cpu)")
    if cfg["optim_state"] == "fp32":
        raise ConfigError("unsloth keeps its weights in bf16 (set optim_state = \"param\")")
    from unsloth import FastLanguageModel

    checkpoint = cfg["checkpoint"]
    has_adapter = os.path.isfile(os.path.join(checkpoint, "adapter_config.json"))
    with base_model_folder(checkpoint, True) as folder:  # links to the weights, without the adapter
        if not os.path.exists(os.path.join(checkpoint, "tokenizer_config.json")):
            write_minimal_tokenizer(folder)
        model, _tokenizer = FastLanguageModel.from_pretrained(
            model_name=folder, max_seq_length=cfg["seq_len"], dtype=torch.bfloat16, load_in_4bit=False,
            full_finetuning=cfg["mode"] == "full", device_map={"": env.local_rank},
            use_gradient_checkpointing="unsloth" if cfg["grad_ckpt"] else False)
    if cfg["mode"] == "lora":
        model = FastLanguageModel.get_peft_model(
            model, r=cfg["lora_rank"], lora_alpha=cfg["lora_alpha"], target_modules=list(cfg["lora_targets"]),
            lora_dropout=0.0, bias="none", use_gradient_checkpointing="unsloth" if cfg["grad_ckpt"] else False,
            random_state=int(cfg.get("seed", 0)))
        if has_adapter:
            load_adapter_weights(model, checkpoint)
    return model, _tokenizer


def load_adapter_weights(model, checkpoint):
    """The prepared adapter's A and B into a model that get_peft_model made: equal initial weights."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = os.path.join(checkpoint, "adapter_model.safetensors")
    state = load_file(path)
    result = set_peft_model_state_dict(model, state)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ConfigError(f"{path}: {len(unexpected)} adapter weight(s) match no LoRA layer, e.g. {unexpected[0]}")
    loaded = sum(1 for name, p in model.named_parameters() if "lora_" in name)
    if loaded != len(state):
        raise ConfigError(f"{path}: {len(state)} adapter weights for {loaded} LoRA weights of the model")


# --------------------------------------------------------------------------------------------
# The Trainer, measured


class StepRecorder:
    """Times each optimizer step (device synchronised, from one step's end to the next, so data
    loading and the Trainer's bookkeeping count), records the step's loss, tokens, gradient norm and
    memory peaks into the rank report, prints the built-in trainer's live line on rank 0, and marks
    the phases with NVTX ranges (step ranges tile the loop)."""

    def __init__(self, torch, cfg, env, report, dataset, cuda, device):
        self.torch, self.cfg, self.env, self.report = torch, cfg, env, report
        self.dataset, self.cuda, self.device = dataset, cuda, device
        self.ranges = NvtxRanges(cuda)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.grad_norm = None
        self.step = 0
        self.t_last = None
        self.in_backward = False

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def train_begin(self):
        self.sync()
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)
        self.report["phase"] = "step 0"
        self.ranges.push("step")
        self.t_last = time.perf_counter()

    def step_end(self):
        import torch.distributed as dist

        torch, cfg, env = self.torch, self.cfg, self.env
        self.sync()
        elapsed = time.perf_counter() - self.t_last
        self.ranges.pop()
        step, world = self.step, env.world_size
        # What the Trainer returned per micro-batch, summed on this rank, is W x (this rank's share
        # of the step's loss) under the global-token rule; the step's loss is the sum over ranks / W.
        loss = self.loss_sum.clone()
        rank_counts = self.dataset.counts(step, env.rank)
        global_counts = [0, 0]
        for r in range(world):
            t, p = self.dataset.counts(step, r)
            global_counts[0] += t
            global_counts[1] += p
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(loss)
        norm = self.grad_norm
        norm = float(norm.item()) if hasattr(norm, "item") else float(norm) if norm is not None else float("nan")
        sample = {"step": step, "warmup": step < cfg["warmup"], "loss": float(loss.item()) / world,
                  "tokens": rank_counts[0], "padded_tokens": cfg["grad_accum"] * cfg["micro_batch"] * cfg["seq_len"],
                  "predicted_tokens": rank_counts[1], "global_predicted_tokens": global_counts[1],
                  "step_time_s": elapsed, "grad_norm": norm, "mem_allocated_peak": 0, "mem_reserved_peak": 0}
        sample["mem_allocated_peak"], sample["mem_reserved_peak"] = memory_peaks(torch, self.cuda, self.device)
        self.report["steps"].append(sample)
        if env.rank == 0:
            print_step_line(cfg, sample, global_counts[0], world, self.report["matmul_bf16_flops"])
        check_finite_step(step, sample["loss"], None if self.grad_norm is None else norm)
        self.loss_sum.zero_()
        self.grad_norm = None
        self.step += 1
        self.report["phase"] = f"step {self.step}"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        self.ranges.push("step")
        # The bookkeeping above (an all-reduce, a host copy) is ours, not the Trainer's: not timed.
        self.t_last = time.perf_counter()

    def train_end(self):
        self.ranges.pop()


def make_callback(recorder):
    from transformers import TrainerCallback

    class Callback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            recorder.train_begin()

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            recorder.ranges.push("optimizer")

        def on_optimizer_step(self, args, state, control, **kwargs):
            recorder.ranges.pop()

        def on_step_end(self, args, state, control, **kwargs):
            recorder.step_end()

        def on_train_end(self, args, state, control, **kwargs):
            recorder.train_end()

    return Callback()


def make_trainer_class(base, cfg, recorder):
    """base (transformers.Trainer or TRL's SFTTrainer) with ddpbench's data order, learning-rate
    schedule and probes; the training step itself is base's."""
    import torch

    class DdpbenchTrainer(base):
        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                lr = float(cfg["lr"])
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                    optimizer if optimizer is not None else self.optimizer, lambda step: lr_at(cfg, step) / lr)
            return self.lr_scheduler

        def get_batch_samples(self, *args, **kwargs):
            recorder.ranges.push("data")
            try:
                return super().get_batch_samples(*args, **kwargs)
            finally:
                recorder.ranges.pop()

        def compute_loss(self, *args, **kwargs):
            recorder.ranges.push("forward")
            try:
                return super().compute_loss(*args, **kwargs)
            finally:
                recorder.ranges.pop()
                if not recorder.in_backward:  # what follows in training_step is the backward pass
                    recorder.ranges.push("backward")
                    recorder.in_backward = True

        def training_step(self, *args, **kwargs):
            loss = super().training_step(*args, **kwargs)
            if recorder.in_backward:
                recorder.ranges.pop()
                recorder.in_backward = False
            recorder.loss_sum += loss.detach().double().sum()
            return loss

        def _get_grad_norm(self, *args, **kwargs):
            norm = super()._get_grad_norm(*args, **kwargs)
            recorder.grad_norm = norm
            return norm

    return DdpbenchTrainer


def training_arguments(args_class, cfg, env, cuda, out_dir, **extra):
    grad_ckpt = cfg["grad_ckpt"] and cfg["trainer"] != "unsloth"  # Unsloth checkpoints through its own patch
    return args_class(
        output_dir=out_dir,
        per_device_train_batch_size=cfg["micro_batch"],
        gradient_accumulation_steps=cfg["grad_accum"],
        max_steps=cfg["warmup"] + cfg["steps"],
        learning_rate=float(cfg["lr"]),
        weight_decay=float(cfg["weight_decay"]),
        max_grad_norm=float(cfg["max_grad_norm"]),
        optim="adamw_torch_fused",
        bf16=cuda,
        use_cpu=not cuda,
        gradient_checkpointing=grad_ckpt,
        gradient_checkpointing_kwargs={"use_reentrant": False} if grad_ckpt else None,
        average_tokens_across_devices=cfg["loss_norm"] != "local-tokens",
        use_liger_kernel=cfg["trainer"] == "liger",
        # One rank is no distributed run to the Trainer (Unsloth refuses a backend there).
        ddp_backend=("nccl" if cuda else "gloo") if env.world_size > 1 else None,
        ddp_bucket_cap_mb=cfg["bucket_cap_mb"],
        ddp_find_unused_parameters=False,
        ddp_timeout=cfg["timeout_s"],
        dataloader_pin_memory=cuda,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=int(cfg.get("seed", 0)),
        **extra,
    )


def default_collator(rows):
    """Rows of equal length into a batch: tensors (our dataset) or lists (a `datasets` dataset)."""
    import torch

    return {key: torch.stack([torch.as_tensor(row[key]) for row in rows]) for key in ("input_ids", "labels")}


def run(cfg, env, report):
    trainer_name = cfg.get("trainer", "hf")
    if trainer_name not in PEER_TRAINERS:
        raise ConfigError(f"peer_trainers.py runs {', '.join(PEER_TRAINERS)}, not '{trainer_name}'")
    missing = missing_packages(trainer_name)
    if missing:
        raise ConfigError(f"trainer {trainer_name}: not installed: {', '.join(missing)}")
    report["phase"] = "import"
    if trainer_name == "unsloth":
        import_unsloth_first()
    import torch
    import torch.distributed as dist

    cuda, device = select_device(torch, cfg, env, report)
    prepare_rendezvous_env(env.world_size)

    report["phase"] = "setup"
    data = TokenFile(cfg["data_file"])
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # rank logs are files: no progress bars in them
    processing_class = None
    if trainer_name == "unsloth":
        model, processing_class = load_unsloth_model(torch, cfg, env, cuda)
    else:
        model = load_hf_model(torch, cfg, env, cuda)
    vocab = int(model.config.vocab_size)
    if data.vocab > vocab:
        raise ConfigError(f"data_file {cfg['data_file']}: vocabulary {data.vocab} is larger than the model's {vocab}")
    report["parameters"] = sum(p.numel() for p in model.parameters())
    report["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if report["trainable_parameters"] == 0:
        raise ConfigError(f"checkpoint {cfg['checkpoint']}: no trainable parameters in mode {cfg['mode']}")

    total = cfg["warmup"] + cfg["steps"]
    dataset = EqualWorkDataset(data, vocab, total, env.world_size, cfg["grad_accum"], cfg["micro_batch"], cfg["seq_len"])
    recorder = StepRecorder(torch, cfg, env, report, dataset, cuda, device)
    out_dir = tempfile.mkdtemp(prefix=f"ddpbench-{trainer_name}-rank{env.rank}-")
    report["phase"] = "rendezvous"  # the Trainer's arguments set up the process group
    if trainer_name == "unsloth" and os.environ.get("DDPBENCH_UNSLOTH_TRAINER", "sft") == "sft":
        from trl import SFTConfig, SFTTrainer

        args = training_arguments(SFTConfig, cfg, env, cuda, out_dir, max_length=cfg["seq_len"], packing=False,
                                  dataset_kwargs={"skip_prepare_dataset": True})
        base = SFTTrainer
        # TRL takes only a `datasets` dataset: the same rows, in the same order, materialised.
        train_dataset = dataset.as_datasets_dataset()
    else:
        from transformers import Trainer, TrainingArguments

        args = training_arguments(TrainingArguments, cfg, env, cuda, out_dir)
        base = Trainer
        train_dataset = dataset
    trainer_class = make_trainer_class(base, cfg, recorder)
    trainer = trainer_class(model=model, args=args, train_dataset=train_dataset, data_collator=default_collator,
                            processing_class=processing_class, callbacks=[make_callback(recorder)])
    if cfg["loss_norm"] == "mean-of-micro-means":
        # The Trainer before 4.46: each micro-batch's mean loss, divided by the accumulation steps.
        trainer.model_accepts_loss_kwargs = False
    if cuda:
        torch.cuda.synchronize(device)
    report["setup_s"] = time.perf_counter() - T_START
    if cuda:  # the MFU denominator, measured on this GPU before the first step (DESIGN.md)
        report["matmul_bf16_flops"] = measure_bf16_matmul_flops(torch, device)

    trainer.train()

    report["phase"] = "shutdown"
    if len(report["steps"]) != total:
        raise ConfigError(f"the Trainer ran {len(report['steps'])} optimizer steps, {total} were asked for")
    report["optimizer_state_bytes"] = sum(
        t.numel() * t.element_size() for state in trainer.optimizer.state.values() for t in state.values()
        if torch.is_tensor(t) and t.dim() > 0)
    report["buckets"], report["bucket_bytes"] = bucket_layout(trainer.model_wrapped)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # no rank tears down while a peer still finishes its last collective
        dist.destroy_process_group()
        time.sleep(0.2)  # see hf_loop.py: Gloo's worker threads release Python tensors
    del trainer, model
    data.close()
    report["phase"] = "done"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--check-packages":
        trainer = argv[1]
        if trainer not in TRAINER_PACKAGES:
            print(f"unknown trainer '{trainer}' (choose {', '.join(PEER_TRAINERS)})", file=sys.stderr)
            return 2
        missing = missing_packages(trainer)
        if missing:
            print(f"trainer {trainer} needs {', '.join(missing)}, not installed (pip install {' '.join(missing)})")
            return EXIT_MISSING_PACKAGES
        return 0
    return rank_main("ddpbench peer trainers (HF Trainer, Liger-Kernel, Unsloth), one rank", run, argv)


if __name__ == "__main__":
    exit_rank(main())
