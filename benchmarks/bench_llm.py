"""Training and scoring throughput of the CoLLM path per precision (fp32, bf16) and batch size, and the share of the
machine's measured bf16 matmul peak each reaches.

Models: "smollm2-135m" (the embedded default, real weights) and "vicuna-7b-shape" (a randomly initialised Llama of
Vicuna-7B's shape, GPU only, speed only). Training = forward + backward of the answer-token BCE through LoRA (q/v,
r 8) + optimizer step, on 160-token synthetic prompts (settings.precision's scheme: bf16 frozen weights, fp32 LoRA,
autocast). Scoring = collm_lib.scoring.score on real ML-1M test prompts (stage 1's template, a seeded sample of
whole users, so rows share histories as the test split's do) when the data is there, else on synthetic prompts.
FLOPs count 2 per non-embedding weight per token forward, 4 with the backward (the frozen weights need no weight
gradients; LoRA's are negligible), attention left out: a lower bound of the work done; each rate is also given as a
share of the matmul peak of its own dtype and of bf16's. A precision this CPU has no bf16 units for is measured on one small batch only (it is emulated,
~100x slower for large matmuls) and marked so. Results: benchmarks/results/llm_<device>.json.

    python benchmarks/bench_llm.py                          # CPU: fp32 and bf16, the profile's batch sizes
    python benchmarks/bench_llm.py --models smollm2-135m vicuna-7b-shape --train-batch 128 --score-batch 1024
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import time
from pathlib import Path

import numpy as np
import torch

from collm_lib import prompts, settings
from collm_lib.io import run_info, write_json
from collm_lib.llm import DEFAULT_MODEL, LLMConfig, add_lora, bundle_from, load_llm, resolve_model_path
from collm_lib.model import CoLLM, set_trainable
from collm_lib.prompts import EncodedSplit
from collm_lib.scoring import autocast, collate, score

VICUNA_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=2048)


def synthetic_prompts(n: int, length: int, vocab: int, seed: int = 0) -> EncodedSplit:
    rng = np.random.default_rng(seed)
    ids = [rng.integers(100, vocab - 1, size=length) for _ in range(n)]
    none = np.full(n, -1)
    return EncodedSplit("synthetic", ids, none, none, np.arange(n, dtype=np.int64), np.ones(n, np.int64),
                        rng.integers(0, 2, n).astype(np.float32), np.ones(n, np.int64))


def ml1m_prompts(tokenizer, rows: int, data_dir: str | None) -> EncodedSplit | None:
    """Stage 1's prompts of whole ML-1M test users (seeded) up to `rows`; None without the data."""
    from collm_lib.data import load_dataset
    from collm_lib.stages import sample_users

    try:
        test = load_dataset("ml-1m", data_dir).test
    except (FileNotFoundError, ValueError):
        return None
    frame = sample_users(test, rows, seed=0)
    return prompts.encode_frame(frame, "movie_text", tokenizer, progress=False)


def matmul_gflops(dtype: torch.dtype, device: torch.device, seconds: float = 2.0) -> float:
    """Measured n x n matmul GFLOP/s in `dtype` (repeated for about `seconds` after a warm-up): n = 2048, or 512 for
    bf16 on a CPU without bf16 units (emulated: one 2048 matmul takes about a minute there)."""
    n = 512 if dtype == torch.bfloat16 and device.type == "cpu" and not settings.bf16_units() else 2048
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    a @ b
    sync(device)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        sync(device)
        done += 1
    return 2 * n**3 * done / (time.perf_counter() - start) / 1e9


def load_model(name: str, device: torch.device, precision: str, tokenizer: str | None):
    if name == "smollm2-135m":
        return load_llm(LLMConfig(device=str(device), precision=precision))
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if device.type != "cuda":
        raise SystemExit("vicuna-7b-shape is a GPU benchmark")
    # any tokenizer will do for speed: it only supplies the pad and answer ids
    tok = AutoTokenizer.from_pretrained(tokenizer or resolve_model_path(DEFAULT_MODEL))
    config = LLMConfig(model=name, device=str(device), precision=precision)
    runtime = settings.runtime(device, precision)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**VICUNA_7B)).to(runtime.dtype)
    return bundle_from(model, tok, config, "random init, Vicuna-7B shape", runtime)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _weights(model: CoLLM) -> int:
    """Non-embedding weights of the LLM: what each token multiplies through."""
    base = model.llm.get_base_model()
    embedding = base.get_input_embeddings().weight.numel()
    return sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n) - embedding


def train_rate(model: CoLLM, pad: int, device: torch.device, length: int, batch: int, steps: int) -> float:
    """Training prompts/s over `steps` timed steps after two warm-up steps."""
    vocab = model.llm.get_base_model().get_input_embeddings().num_embeddings
    train = synthetic_prompts(batch * (steps + 2), length, vocab)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for step in range(steps + 2):
        idx = np.arange(step * batch, (step + 1) * batch)
        sync(device)
        start = time.perf_counter()
        with autocast(model):
            logits = model(**collate(train, idx, pad, device))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits.float(), torch.as_tensor(train.label[idx], device=device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        times.append(time.perf_counter() - start)
    return batch * steps / sum(times[2:])


def score_rate(model: CoLLM, enc: EncodedSplit, pad: int, device: torch.device, batch: int) -> tuple[float, int]:
    """(prompts/s, tokens through the model per prompt on average) of scoring all of `enc` once, after a warm-up."""
    score(model, enc.subset(np.arange(min(batch, len(enc)))), pad, batch, progress=False)
    sync(device)
    start = time.perf_counter()
    score(model, enc, pad, batch, progress=False)
    sync(device)
    return len(enc) / (time.perf_counter() - start), int(enc.lengths.mean())


def bench(name: str, device: torch.device, precision: str, length: int, train_batches: list[int],
          score_batches: list[int], steps: int, score_rows: int, data_dir: str | None, peaks: dict[str, float],
          tokenizer: str | None = None) -> list[dict]:
    emulated = precision == "bf16" and device.type == "cpu" and not settings.bf16_units()
    if emulated:  # one small measurement: enough to show why auto never picks it here
        train_batches, score_batches, steps, score_rows = train_batches[:1], score_batches[:1], 1, 32
    bundle = add_lora(load_model(name, device, precision, tokenizer), LLMConfig())
    model = CoLLM(bundle).to(device)
    set_trainable(model, 1)
    pad, weights = bundle.tokenizer.pad_token_id, _weights(model)
    real = ml1m_prompts(bundle.tokenizer, score_rows, data_dir) if name == "smollm2-135m" else None
    vocab = model.llm.get_base_model().get_input_embeddings().num_embeddings
    enc = real if real is not None else synthetic_prompts(score_rows, length, vocab, seed=1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = {"model": name, "precision": precision, "dtype": bundle.info["dtype"], "emulated_bf16": emulated}
    results = []
    for batch in train_batches:
        rate = train_rate(model, pad, device, length, batch, steps)
        gflops = rate * 4 * weights * length / 1e9
        results.append(base | {"task": "train", "batch": batch, "prompt_tokens": length, "prompts_per_s": round(rate, 2),
                               "gflops": round(gflops, 1)} | _shares(gflops, precision, peaks))
        print(results[-1], flush=True)
    model.eval()
    for batch in score_batches:
        rate, tokens = score_rate(model, enc, pad, device, batch)
        gflops = rate * 2 * weights * tokens / 1e9  # full prompts: the shared prefixes do less than this
        results.append(base | {"task": "score", "batch": batch, "prompts": len(enc),
                               "prompts_from": "ml-1m test (stage 1 template)" if real is not None else "synthetic",
                               "prompt_tokens": tokens, "prompts_per_s": round(rate, 2),
                               "gflops_full_prompt_equivalent": round(gflops, 1)} | _shares(gflops, precision, peaks))
        print(results[-1], flush=True)
    for r in results:
        r["peak_memory_mb"] = round(peak_memory_mb(device), 1)
    return results


def _shares(gflops: float, precision: str, peaks: dict[str, float]) -> dict[str, float]:
    own = peaks["float32" if precision == "fp32" else "bfloat16"]
    return {"share_of_own_dtype_peak": round(gflops / own, 3), "share_of_bf16_peak": round(gflops / peaks["bfloat16"], 3)}


def speedups(results: list[dict]) -> list[dict]:
    """bf16 over fp32 throughput at each (model, task, batch) measured in both."""
    keyed = {(r["model"], r["task"], r["batch"], r["precision"]): r["prompts_per_s"] for r in results}
    return [{"model": m, "task": t, "batch": b, "bf16_over_fp32": round(keyed[(m, t, b, "bf16")] / rate, 2)}
            for (m, t, b, p), rate in keyed.items() if p == "fp32" and (m, t, b, "bf16") in keyed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    parser.add_argument("--length", type=int, default=160, help="training prompt tokens")
    parser.add_argument("--train-batch", type=int, nargs="+", default=None, help="default 4 8 16 CPU / 128 GPU")
    parser.add_argument("--score-batch", type=int, nargs="+", default=None, help="default 8 16 32 64 CPU / 1024 GPU")
    parser.add_argument("--score-rows", type=int, default=None, help="prompts scored (default 384 CPU / 8192 GPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps (default 3 CPU / 20 GPU)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder for the random-weight shape")
    args = parser.parse_args()
    device = settings.device()
    gpu = device.type == "cuda"
    peaks = {str(d).removeprefix("torch."): round(matmul_gflops(d, device), 1) for d in (torch.float32, torch.bfloat16)}
    print("matmul GFLOP/s", peaks, flush=True)
    results = []
    for name in args.models:
        for precision in args.precisions:
            results += bench(name, device, precision, args.length, args.train_batch or ([128] if gpu else [4, 8, 16]),
                             args.score_batch or ([1024] if gpu else [8, 16, 32, 64]),
                             args.steps or (20 if gpu else 3), args.score_rows or (8192 if gpu else 384),
                             args.data_dir, peaks, args.tokenizer)
    tag = re.sub(r"[^a-z0-9]+", "_", (torch.cuda.get_device_name(0) if gpu else "cpu").lower()).strip("_")
    out = args.out or Path(__file__).parent / "results" / f"llm_{tag}.json"
    write_json(out, {"matmul_2048_gflops": peaks, "bf16_units": settings.bf16_units(),
                     "auto_precision": settings.precision_note(device), "results": results,
                     "bf16_over_fp32": speedups(results), "run": run_info(0), "threads": torch.get_num_threads(),
                     "load_average": list(os.getloadavg())})
    print("wrote", out)


if __name__ == "__main__":
    main()
