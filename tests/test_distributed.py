"""Training under torchrun with DistributedDataParallel: 2 CPU processes, gloo backend."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from collm_lib import prompts
from collm_lib.llm import LLMConfig, add_lora, bundle_from
from collm_lib.model import CoLLM, load_adapter_state
from collm_lib.scoring import score
from tiny_llm import movie_frame, real_tokenizer, tiny_llama

HERE = Path(__file__).parent


def test_two_process_gloo_training_stops_together_and_gathers_scores(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    # --standalone: a c10d rendezvous on localhost:0, so the OS picks free ports and two runs never collide
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           str(HERE / "ddp_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # early stopping was decided once and broadcast: both ranks stopped at the same step
    assert ranks[0]["steps"] == ranks[1]["steps"] == 3 and ranks[0]["stopped_early"] and ranks[1]["stopped_early"]
    # DDP kept the replicas identical, and the gathered scores are the full valid set on both ranks
    assert ranks[0]["lora_sum"] == ranks[1]["lora_sum"] and ranks[0]["first_param"] == ranks[1]["first_param"]
    assert ranks[0]["scores"] == ranks[1]["scores"] and len(ranks[0]["scores"]) == 11
    # a single process scoring the saved best weights gives the same scores, row for row
    tok = real_tokenizer()
    model = CoLLM(add_lora(bundle_from(tiny_llama(len(tok), 0), tok, LLMConfig(model="tiny", precision="fp32"), "tiny"),
                           LLMConfig(model="tiny")))
    load_adapter_state(model, torch.load(tmp_path / "best.pt"))
    valid = prompts.encode_frame(movie_frame(11, 8, 20, 0, 1), "movie_text", tok, progress=False)
    np.testing.assert_allclose(score(model, valid, tok.pad_token_id, batch_size=4, progress=False),
                               np.array(ranks[0]["scores"]), rtol=1e-5, atol=1e-5)


def test_collm_stages_under_torchrun_trains_the_mf_once_and_prints_on_rank_0(tmp_path, shared_data):
    """scripts/run_stages.py (an alias of `collm stages`) on 2 CPU processes: rank 0 trains the MF while rank 1
    waits (two ranks training one folder would race on its files), and only rank 0 prints the summary."""
    from tiny_llm import save_tiny

    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "COLLM_WORK_DIR": str(tmp_path / "work"),
           "COLLM_DATA_DIR": str(shared_data)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           str(HERE.parent / "scripts" / "run_stages.py"), "--profile", "smoke", "--model",
           str(save_tiny(tmp_path / "tiny")), "--max-steps", "2", "--mf-max-epochs", "1", "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # one JSON document: rank 1 printed nothing
    assert set(summary) == {"stage1", "stage2", "mf_same_rows"} and summary["stage2"]["fit"]["steps"] == 2
    mf_log = next((tmp_path / "work" / "runs" / "ml-1m").glob("mf-*/run.log")).read_text()
    assert mf_log.count("run info: ") == 1 and proc.stderr.count("MF ml-1m trained") == 1
