"""bf16 against fp32 on the project's trained model: one finished stage run's kept weights on its whole test split in
both precisions (its own scores as it committed them, the other precision's scored here), the paired AUC / UAUC
difference (bf16 minus fp32) with its 95 % user-level interval, rank correlation and the logits' largest change.
tests/test_precision.py checks the same on a short trained stage 2 on 122 rows; this is the number on the committed
rows (docs/profiles.md, "bf16 and fp32").

Needs a CPU with bf16 units for bf16 at speed (elsewhere it is emulated: hours). Results:
benchmarks/results/precision_<device>.json.

    python benchmarks/bench_precision.py --profile cpu            # notebook 04's run of the profile (ML-1M)
    python benchmarks/bench_precision.py --run data/runs/ml-1m/stage2-...
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from collm_lib import baselines, metrics, plan_runs, prompts, settings, stages
from collm_lib.data import load_dataset
from collm_lib.io import read_json, run_info, write_json
from collm_lib.scoring import score
from paths import portable


def scores_in(folder: Path, splits, precision: str) -> tuple[np.ndarray, pd.DataFrame, float]:
    """(scores, the rows scored, seconds) of the finished stage run in `folder` on its test rows, in `precision`."""
    model, bundle, config = stages.load_trained(folder, precision=precision)
    rows = baselines.rows_of(splits, folder)
    template = config.template or prompts.default_template(splits.name, with_ids=config.stage == 2)
    enc = prompts.encode_frame(rows, template, bundle.tokenizer, config.max_history, progress=False)
    start = time.perf_counter()
    out = score(model, enc, bundle.tokenizer.pad_token_id, config.score_batch_size, progress=True)
    return out, rows, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", help="take notebook 04's run of this profile (default cpu)")
    parser.add_argument("--run", type=Path, default=None, help="a finished stage run folder instead")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    splits = load_dataset("ml-1m", args.data_dir)
    folder = args.run or plan_runs.main_runs(args.profile, splits, progress=False)["stage2"]
    ran_in = read_json(Path(folder) / "config.json")["config"]["llm"]["precision"]
    other = "fp32" if ran_in == "bf16" else "bf16"
    scored, seconds = {}, {}
    scored[other], rows, seconds[other] = scores_in(Path(folder), splits, other)
    print(other, f"{seconds[other]:.0f} s", flush=True)
    saved = baselines.on_keys(pd.read_csv(Path(folder) / "scores_test.csv"), rows, "the run's test scores")
    scored[ran_in] = saved["score"].to_numpy()  # its own precision: the scores the run committed
    frames = {p: rows[["uid", "iid", "label"]].assign(score=s) for p, s in scored.items()}
    diff = metrics.paired_difference(frames["bf16"], frames["fp32"], seed=2023, **metrics.BOOTSTRAP)
    alone = {p: metrics.bootstrap(f, seed=2023, **metrics.BOOTSTRAP) for p, f in frames.items()}
    change = np.abs(scored["bf16"] - scored["fp32"])
    result = {"run": portable(folder), "rows": len(rows), "users": diff["users"], "ran_in": ran_in,
              "rescored_in": other,
              "auc": {p: [a["auc"], a["auc_lo"], a["auc_hi"]] for p, a in alone.items()},
              "uauc": {p: [a["uauc"], a["uauc_lo"], a["uauc_hi"]] for p, a in alone.items()},
              "bf16_minus_fp32": {k: diff[k] for k in ("auc", "auc_lo", "auc_hi", "uauc", "uauc_lo", "uauc_hi")},
              "spearman": float(pd.Series(scored["fp32"]).corr(pd.Series(scored["bf16"]), method="spearman")),
              "score_std_fp32": float(np.std(scored["fp32"])), "max_abs_change": float(change.max()),
              "p99_abs_change": float(np.quantile(change, 0.99)), "seconds": seconds,
              "bf16_units": settings.bf16_units(), "cpu": run_info(0), "threads": torch.get_num_threads()}
    print(result)
    tag = re.sub(r"[^a-z0-9]+", "_", (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu").lower())
    out = args.out or Path(__file__).parent / "results" / f"precision_{tag.strip('_')}.json"
    write_json(out, result)
    print("wrote", out)


if __name__ == "__main__":
    main()
