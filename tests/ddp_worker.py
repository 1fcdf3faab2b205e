"""Run by tests/test_distributed.py under torchrun: a tiny stage-1 fit on 2 CPU processes (gloo)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

from collm_lib import prompts
from collm_lib.llm import LLMConfig, add_lora, bundle_from
from collm_lib.distributed import init_distributed
from collm_lib.model import CoLLM, set_trainable
from collm_lib.scoring import score
from collm_lib.train import StageConfig, fit
from tiny_llm import movie_frame, real_tokenizer, tiny_llama

out = Path(sys.argv[1])
device = init_distributed()
rank = dist.get_rank()
tok = real_tokenizer()
model = CoLLM(add_lora(bundle_from(tiny_llama(len(tok), 0), tok, LLMConfig(model="tiny", precision="fp32"), "tiny"),
                       LLMConfig(model="tiny")))
set_trainable(model, 1)
train = prompts.encode_frame(movie_frame(24, 8, 20, -1, 0), "movie_text", tok, progress=False)
valid = prompts.encode_frame(movie_frame(11, 8, 20, 0, 1), "movie_text", tok, progress=False)  # odd: uneven shards
# lr 0 never improves after the first evaluation, so patience 2 must stop every rank at step 3
config = StageConfig(stage=1, batch_size=2, max_steps=50, eval_every=1, patience=2, warmup_steps=1, lr=1e-9,
                     min_lr=1e-9, score_batch_size=4)
result = fit(model, train, valid, config, tok.pad_token_id, out_dir=out if rank == 0 else None, progress=False)
scores = score(model, valid, tok.pad_token_id, batch_size=4, progress=False)
lora = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
first = sorted(lora)[0]
(out / f"rank{rank}.json").write_text(json.dumps({
    "steps": result.steps, "stopped_early": result.stopped_early, "scores": scores.tolist(),
    "lora_sum": float(sum(v.double().sum() for v in lora.values())), "first_param": lora[first].flatten()[:5].tolist()}))
dist.barrier()
dist.destroy_process_group()
