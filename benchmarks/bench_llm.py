"""Training and scoring throughput (prompts/s at 160 tokens) and peak memory of the CoLLM scoring path.

Models: "smollm2-135m" (the embedded default, real weights) and "vicuna-7b-shape" (a randomly
initialised Llama of Vicuna-7B's shape, GPU only, speed only). Training = forward + backward of the
answer-token BCE through LoRA (q/v, r 8) + optimizer step; scoring = forward to the answer logit.
Results go to benchmarks/results/llm_<device>.json.

    python benchmarks/bench_llm.py                                  # CPU: default model
    python benchmarks/bench_llm.py --models smollm2-135m vicuna-7b-shape --train-batch 128 --score-batch 1024
"""
from __future__ import annotations

import argparse
import re
import resource
import time
from pathlib import Path

import numpy as np
import torch

from collm_lib import settings
from collm_lib.io import run_info, write_json
from collm_lib.llm import DEFAULT_MODEL, LLMConfig, add_lora, bundle_from, load_llm, resolve_model_path
from collm_lib.prompts import EncodedSplit
from collm_lib.model import CoLLM, set_trainable
from collm_lib.scoring import collate, score

VICUNA_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=2048)


def synthetic_prompts(n: int, length: int, vocab: int, seed: int = 0) -> EncodedSplit:
    rng = np.random.default_rng(seed)
    ids = [rng.integers(100, vocab - 1, size=length) for _ in range(n)]
    none = np.full(n, -1)
    return EncodedSplit("synthetic", ids, none, none, np.ones(n, np.int64), np.ones(n, np.int64),
                        rng.integers(0, 2, n).astype(np.float32), np.ones(n, np.int64))


def load_model(name: str, device: torch.device, tokenizer: str | None):
    if name == "smollm2-135m":
        return load_llm(LLMConfig(device=str(device)))
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if device.type != "cuda":
        raise SystemExit("vicuna-7b-shape is a GPU benchmark")
    # any tokenizer will do for speed: it only supplies the pad and answer ids
    tok = AutoTokenizer.from_pretrained(tokenizer or resolve_model_path(DEFAULT_MODEL))
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**VICUNA_7B)).to(torch.bfloat16)
    return bundle_from(model, tok, LLMConfig(model=name), "random init, Vicuna-7B shape")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(name: str, device: torch.device, length: int, train_batch: int, score_batch: int, steps: int,
          tokenizer: str | None = None) -> dict:
    bundle = add_lora(load_model(name, device, tokenizer), LLMConfig())
    model = CoLLM(bundle).to(device)
    set_trainable(model, 1)
    vocab = model.llm.get_base_model().get_input_embeddings().num_embeddings
    pad = bundle.tokenizer.pad_token_id
    train = synthetic_prompts(train_batch * (steps + 2), length, vocab)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(steps + 2):  # the first two steps warm up kernels and the allocator
        idx = np.arange(step * train_batch, (step + 1) * train_batch)
        sync(device)
        start = time.perf_counter()
        with autocast:
            logits = model(**collate(train, idx, pad, device))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits.float(), torch.as_tensor(train.label[idx], device=device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        times.append(time.perf_counter() - start)
    train_rate = train_batch * steps / sum(times[2:])
    train_mem = peak_memory_mb(device)
    test = synthetic_prompts(score_batch * max(2, steps // 2), length, vocab, seed=1)
    score(model, test.subset(np.arange(score_batch)), pad, score_batch, progress=False)  # warm-up
    sync(device)
    start = time.perf_counter()
    score(model, test, pad, score_batch, progress=False)
    sync(device)
    score_rate = len(test) / (time.perf_counter() - start)
    return {"model": name, "prompt_tokens": length, "train_batch": train_batch, "score_batch": score_batch,
            "train_prompts_per_s": round(train_rate, 2), "score_prompts_per_s": round(score_rate, 2),
            "peak_memory_mb": round(max(train_mem, peak_memory_mb(device)), 1),
            "dtype": bundle.info["dtype"], "parameters": bundle.info["parameters"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m"])
    parser.add_argument("--length", type=int, default=160)
    parser.add_argument("--train-batch", type=int, nargs="+", default=None, help="per model; default 8 CPU / 128 GPU")
    parser.add_argument("--score-batch", type=int, nargs="+", default=None, help="per model; default 16 CPU / 1024 GPU")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps (default 5 CPU / 20 GPU)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder for the random-weight shape")
    args = parser.parse_args()
    device = settings.device()
    gpu = device.type == "cuda"
    train_b = args.train_batch or [128 if gpu else 8] * len(args.models)
    score_b = args.score_batch or [1024 if gpu else 16] * len(args.models)
    steps = args.steps or (20 if gpu else 5)
    results = []
    for name, tb, sb in zip(args.models, train_b, score_b):
        results.append(bench(name, device, args.length, tb, sb, steps, args.tokenizer))
        print(results[-1], flush=True)
    tag = re.sub(r"[^a-z0-9]+", "_", (torch.cuda.get_device_name(0) if gpu else "cpu").lower()).strip("_")
    out = args.out or Path(__file__).parent / "results" / f"llm_{tag}.json"
    write_json(out, {"results": results, "run": run_info(0), "threads": torch.get_num_threads(),
                     "load_average": list(__import__("os").getloadavg())})
    print("wrote", out)


if __name__ == "__main__":
    main()
