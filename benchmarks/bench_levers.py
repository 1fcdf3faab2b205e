"""What the gpu profile's speed levers buy, measured on this machine with the embedded model and real ML-1M prompts.

- forward-only prefix (stage 2): seconds per training step with and without it, on the same batches, and the
  share of the prompts' tokens that lie before each row's first ID slot (the part that runs forward-only);
- tokenisation shared across a sweep: seconds to tokenise ML-1M's train / valid_small / test once (what every
  further run of a sweep no longer pays).
Equivalence (same losses and scores) is tested in tests/test_levers.py. Results: benchmarks/results/levers_<device>.json.

    python benchmarks/bench_levers.py [--steps 6] [--batch 8]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from collm_lib import settings
from collm_lib.collab import MatrixFactorization
from collm_lib.data import load_dataset
from collm_lib.fece import HybridEncoder
from collm_lib.io import run_info, write_json
from collm_lib.llm import LLMConfig, add_lora, load_llm
from collm_lib.prompts import default_template, encode_frame
from collm_lib.model import CoLLM, set_trainable
from collm_lib.scoring import collate, frozen_prefix


def prefix_share(enc) -> float:
    """Share of the tokens (every 7th train row) before the row's first ID slot: what runs forward-only."""
    rows = range(0, len(enc), 7)
    return float(np.mean([frozen_prefix(enc, np.array([i]))[0][0] / enc.lengths[i] for i in rows]))


def step_seconds(model: CoLLM, enc, batches: list[np.ndarray], pad_id: int, device, use_prefix: bool) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for idx in batches:
        start = time.perf_counter()
        batch = collate(enc, idx, pad_id, device)
        logits = model(**batch, split=frozen_prefix(enc, idx) if use_prefix else None)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(),
                                                                    torch.as_tensor(enc.label[idx], device=device))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))  # the first step warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    device = settings.device()
    splits = load_dataset("ml-1m", args.data_dir)
    bundle = add_lora(load_llm(LLMConfig()), LLMConfig())
    tokenise = {}
    for name in ("train", "valid_small", "test"):
        start = time.perf_counter()
        enc = encode_frame(splits.split(name), default_template("ml-1m", with_ids=True), bundle.tokenizer,
                           progress=False)
        tokenise[name] = round(time.perf_counter() - start, 2)
        if name == "train":
            train = enc
    rng = np.random.default_rng(0)
    mf = MatrixFactorization(splits.n_users, splits.n_items, 256, 0.1)  # speed only: random MF weights
    model = CoLLM(bundle, HybridEncoder(mf, bundle.model.config.hidden_size)).to(device)
    set_trainable(model, 2)
    model.train()
    batches = [rng.choice(len(train), size=args.batch, replace=False) for _ in range(args.steps + 1)]
    full = step_seconds(model, train, batches, bundle.tokenizer.pad_token_id, device, use_prefix=False)
    prefixed = step_seconds(model, train, batches, bundle.tokenizer.pad_token_id, device, use_prefix=True)
    result = {
        "stage2_step_seconds": {"full": round(full, 3), "forward_only_prefix": round(prefixed, 3),
                                "speedup": round(full / prefixed, 2), "batch": args.batch, "steps": args.steps},
        "prefix_token_share": round(prefix_share(train), 3),
        "tokenise_seconds_ml1m": tokenise,
        "threads": torch.get_num_threads(),
        "run": run_info(0),
    }
    name = "cpu" if device.type == "cpu" else torch.cuda.get_device_name(device).lower().replace(" ", "_")
    out = write_json(Path(__file__).parent / "results" / f"levers_{name}.json", result)
    print(result, "->", out)


if __name__ == "__main__":
    main()
