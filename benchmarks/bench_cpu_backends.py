"""The LLM on a CPU without bf16 units (issue 35, "measure first"): fp32 eager against int8 candidates, on the
project's trained model, as shares of this CPU's measured fp32 (and int8) matmul peak.

Scoring: the cpu profile's finished ML-1M stage-2 run (notebook 04), loaded in fp32, scores a seeded sample of whole
test users (`--rows`) with collm_lib.scoring.score at the profile's batch, once per candidate:
  fp32          eager PyTorch, today's path without bf16 units (the reference);
  int8-dynamic  PyTorch's dynamic int8 Linear (fbgemm: per-tensor activation scale per call, int8 weights);
  w8a8          int8 activations per token x int8 weights per output channel through torch._int_mm (oneDNN);
  w8a8-smooth   the same after SmoothQuant's smoothing (alpha 0.5), its activation ranges from 64 train prompts.
Every int8 candidate quantizes the decoder's frozen Linear layers; LoRA, the FECE mapper, the embeddings and the
answer head stay fp32. Each gives prompts/s, its speed-up over fp32, the sample's AUC and the paired AUC difference
from fp32 with its user-level 95 % interval, and the answer logits' correlation and largest change.

Training: one stage-2 step as train.fit runs it (the profile's batch of real ID prompts, forward-only prefix, BCE,
AdamW) in fp32 eager, timed, and profiled by operator: the share of the step in matrix multiplies bounds what any
faster matmul kernel can give it (int8 has no backward in PyTorch; the bound assumes one that does, for free).

On a CPU with bf16 units, emulate one without (every library capped at AVX2; torch's cpuinfo still reports the
units, so the run's identity is looked up as bf16 and the model is loaded in fp32 on purpose):

    FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python benchmarks/bench_cpu_backends.py
Results: benchmarks/results/cpu_backends_<tag>.json (tag: avx2_emulated or native).
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from bench_llm import matmul_gflops
from paths import portable
from torch import nn

from collm_lib import baselines, metrics, plan_runs, profiles, prompts, settings, stages
from collm_lib.data import load_dataset
from collm_lib.io import run_info, write_json
from collm_lib.llm import LLMConfig
from collm_lib.model import set_trainable
from collm_lib.scoring import collate, frozen_prefix, score

CAPS = ("FBGEMM_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


class W8A8Linear(nn.Module):
    """y = x W^T + b with x quantized to int8 per token and W per output channel, multiplied in int32 (torch._int_mm),
    after dividing x's channels by `smooth` (folded into W: exact before rounding)."""

    def __init__(self, linear: nn.Linear, smooth: torch.Tensor | None = None):
        super().__init__()
        weight = linear.weight.detach() * (smooth if smooth is not None else 1.0)
        scale = weight.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127
        self.register_buffer("q_weight_t", (weight / scale).round().to(torch.int8).t())  # K x N view: oneDNN's layout
        self.register_buffer("w_scale", scale.t().contiguous())
        self.register_buffer("inv_smooth", None if smooth is None else 1 / smooth)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if self.inv_smooth is not None:
            flat = flat * self.inv_smooth
        scale = flat.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127
        q = torch.round(flat / scale).to(torch.int8)
        if len(q) > 16:  # torch._int_mm needs more than 16 rows
            out = torch._int_mm(q, self.q_weight_t).float()
        else:
            out = q.float() @ self.q_weight_t.float()
        out = out * scale * self.w_scale
        out = out if self.bias is None else out + self.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])


def _frozen_linears(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, layer) of the decoder's frozen Linear layers: not LoRA, the mapper or the answer head."""
    found = []
    for name, parent in model.named_modules():
        for attr, child in parent.named_children():
            full = f"{name}.{attr}"
            if isinstance(child, nn.Linear) and not any(k in full for k in ("lora_", "mapper", "lm_head")):
                found.append((parent, attr, child))
    return found


def _input_ranges(model: nn.Module, enc: prompts.EncodedSplit, pad: int, batch: int) -> dict[int, torch.Tensor]:
    """Per-channel largest |input| of each frozen Linear (by id) over `enc`: SmoothQuant's calibration."""
    ranges: dict[int, torch.Tensor] = {}

    def hook(module, args):
        seen = args[0].detach().reshape(-1, args[0].shape[-1]).abs().amax(dim=0)
        ranges[id(module)] = torch.maximum(ranges.get(id(module), seen), seen)

    handles = [layer.register_forward_pre_hook(hook) for _, _, layer in _frozen_linears(model)]
    score(model, enc, pad, batch, progress=False, shared_prefix=False)
    for h in handles:
        h.remove()
    return ranges


def quantize(model: nn.Module, kind: str, calibration: dict[int, torch.Tensor] | None = None) -> None:
    """Put the int8 candidate `kind` in place of the model's frozen Linear layers."""
    if kind == "int8-dynamic":
        frozen = {id(layer) for _, _, layer in _frozen_linears(model)}
        spec = {n: torch.ao.quantization.default_dynamic_qconfig for n, m in model.named_modules() if id(m) in frozen}
        torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
        return
    for parent, attr, layer in _frozen_linears(model):
        smooth = None
        if kind == "w8a8-smooth":  # s_j = max|X_j|^0.5 / max|W_j|^0.5, per input channel j
            weight_range = layer.weight.detach().abs().amax(dim=0).clamp(min=1e-5)
            smooth = (calibration[id(layer)].clamp(min=1e-5).sqrt() / weight_range.sqrt()).clamp(min=1e-2, max=1e2)
        setattr(parent, attr, W8A8Linear(layer, smooth))


def int8_gflops(seconds: float = 2.0, n: int = 2048) -> float:
    """Measured n x n torch._int_mm (int8 in, int32 out) GOP/s on the CPU."""
    a, b = (torch.randint(-127, 128, (n, n), dtype=torch.int8) for _ in range(2))
    torch._int_mm(a, b)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch._int_mm(a, b)
        done += 1
    return 2 * n**3 * done / (time.perf_counter() - start) / 1e9


def scoring(folder: Path, splits, rows: pd.DataFrame, kinds: list[str], batch: int) -> list[dict]:
    results, reference = [], None
    for kind in kinds:
        model, bundle, config = stages.load_trained(folder, precision="fp32")
        template = config.template or prompts.default_template(splits.name, with_ids=True)
        enc = prompts.encode_frame(rows, template, bundle.tokenizer, config.max_history, progress=False)
        pad = bundle.tokenizer.pad_token_id
        if kind != "fp32":
            calibration = None
            if kind == "w8a8-smooth":
                calib_rows = stages.sample_users(splits.train, 64, seed=1)
                calib = prompts.encode_frame(calib_rows, template, bundle.tokenizer, config.max_history, progress=False)
                calibration = _input_ranges(model, calib, pad, batch)
            quantize(model, kind, calibration)
        score(model, enc.subset(np.arange(min(batch, len(enc)))), pad, batch, progress=False)  # warm-up
        start = time.perf_counter()
        logits = np.asarray(score(model, enc, pad, batch, progress=True), dtype=np.float64)
        rate = len(enc) / (time.perf_counter() - start)
        frame = rows[["uid", "iid", "label"]].assign(score=logits)
        reference = (frame, rate) if reference is None else reference
        diff = metrics.paired_difference(frame, reference[0], seed=2023, **metrics.BOOTSTRAP)
        ref = reference[0]["score"].to_numpy()
        shares = {} if kind != "fp32" else operator_shares(
            lambda: score(model, enc.subset(np.arange(min(2 * batch, len(enc)))), pad, batch, progress=False))
        results.append({"task": "score", "backend": kind, "batch": batch, "prompts": len(enc),
                        "prompt_tokens_mean": round(float(enc.lengths.mean()), 1), "prompts_per_s": round(rate, 2),
                        "speedup_over_fp32": round(rate / reference[1], 2),
                        "auc": round(metrics.auc(frame["label"], frame["score"]), 4),
                        "auc_minus_fp32": [round(diff[k], 4) for k in ("auc", "auc_lo", "auc_hi")],
                        "pearson_vs_fp32": round(float(np.corrcoef(logits, ref)[0, 1]), 4),
                        "max_abs_logit_change": round(float(np.abs(logits - ref).max()), 3),
                        "fp32_logit_std": round(float(ref.std()), 3), **shares})
        print(results[-1], flush=True)
    return results


def training_step(folder: Path, splits, steps: int) -> dict:
    """Seconds per stage-2 step (fp32 eager, as train.fit runs it) and the operator shares of one profiled step."""
    model, bundle, config = stages.load_trained(folder, precision="fp32")
    set_trainable(model, 2)
    train_rows = stages.sample_users(splits.train, config.batch_size * (steps + 2), seed=2)
    template = config.template or prompts.default_template(splits.name, with_ids=True)
    enc = prompts.encode_frame(train_rows, template, bundle.tokenizer, config.max_history, progress=False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    model.train()
    order = np.random.default_rng(0).permutation(len(enc))

    def step(i: int) -> None:
        idx = order[i * config.batch_size:(i + 1) * config.batch_size]
        logits = model(**collate(enc, idx, bundle.tokenizer.pad_token_id, torch.device("cpu")),
                       split=frozen_prefix(enc, idx) if config.prefix_no_grad else None)
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), torch.as_tensor(enc.label[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(0)
    times = []
    for i in range(1, steps + 1):
        start = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - start)
    return {"task": "train", "stage": 2, "backend": "fp32", "batch": config.batch_size,
            "prompt_tokens_mean": round(float(enc.lengths.mean()), 1), "steps_timed": steps,
            "seconds_per_step": round(float(np.median(times)), 3), **operator_shares(lambda: step(steps + 1))}


def operator_shares(work) -> dict:
    """Shares of `work`'s CPU time by operator kind (torch.profiler, self time)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        work()
    self_us = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(self_us.values())
    share = lambda keys: round(sum(v for k, v in self_us.items() if any(s in k for s in keys)) / total, 3)  # noqa: E731
    return {"share_matmul": share(("aten::mm", "aten::addmm", "aten::bmm", "aten::_int_mm")),
            "share_attention": share(("scaled_dot_product", "_flash_attention")),
            "share_dropout": share(("dropout", "bernoulli")),
            "share_optimizer": share(("Optimizer", "adamw", "_foreach")),
            "top_ops": sorted(((k, round(v / total, 3)) for k, v in self_us.items()), key=lambda kv: -kv[1])[:8]}


def bound(result: dict, peaks: dict) -> float:
    """The most int8 matmuls could speed `result`'s work up (Amdahl: the matmul share at the measured int8/fp32
    matmul ratio, everything else unchanged, quantizing free)."""
    ratio, share = peaks["int8_int_mm_2048_gops"] / peaks["fp32_matmul_2048_gflops"], result["share_matmul"]
    return round(1 / (1 - share + share / ratio), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", help="notebook 04's run of this profile (ML-1M)")
    parser.add_argument("--rows", type=int, default=192, help="whole test users sampled until this many rows")
    parser.add_argument("--scorers", nargs="+", default=["fp32", "int8-dynamic", "w8a8", "w8a8-smooth"])
    parser.add_argument("--train-steps", type=int, default=3, help="timed stage-2 steps (0: none)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.ao.quantization's notice, once per call
    warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
    splits = load_dataset("ml-1m", args.data_dir)
    # the committed cpu runs ran in bf16: their identity says so, whatever this (maybe emulated) CPU would pick
    folder = plan_runs.main_runs(args.profile, splits, llm=LLMConfig(precision="bf16"), progress=False)["stage2"]
    rows = stages.sample_users(baselines.rows_of(splits, folder), args.rows, seed=0)
    peaks = {"fp32_matmul_2048_gflops": round(matmul_gflops(torch.float32, torch.device("cpu")), 1),
             "int8_int_mm_2048_gops": round(int8_gflops(), 1)}
    print(peaks, flush=True)
    batch = profiles.stage(args.profile, 2, dataset="ml-1m").score_batch_size
    results = scoring(Path(folder), splits, rows, args.scorers, batch)
    if args.train_steps:
        results.append(training_step(Path(folder), splits, args.train_steps))
        print(results[-1], flush=True)
    for r in results:
        if "share_matmul" in r:
            r["bound_with_int8_matmuls"] = bound(r, peaks)
    caps = {k: os.environ[k] for k in CAPS if k in os.environ}
    tag = "avx2_emulated" if caps.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX2" else "native"
    out = args.out or Path(__file__).parent / "results" / f"cpu_backends_{tag}.json"
    caps_cpu = torch.cpu.get_capabilities()  # the real CPU's instruction sets (no library cap changes them)
    flags = sorted(k for k in ("avx2", "fma3", "avx512_f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
                               "amx_int8") if caps_cpu.get(k))
    write_json(out, {"run_folder": portable(folder), **peaks, "library_caps": caps,
                     "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_flags": flags,
                     "bf16_units_reported": settings.bf16_units(), "results": results, "run": run_info(0),
                     "threads": torch.get_num_threads(), "load_average": list(os.getloadavg())})
    print("wrote", out)


if __name__ == "__main__":
    main()
