"""Stage 1 then stage 2 on one dataset from the command line: the path of notebooks 03 and 04
without Jupyter (for a GPU box without papermill, or under torchrun for several GPUs).

    python scripts/run_stages.py --profile gpu --dataset ml-1m
    torchrun --nproc_per_node 4 scripts/run_stages.py --profile gpu --dataset ml-1m
"""
from __future__ import annotations

import argparse
import json

from collm_lib import collab, settings, stages, train
from collm_lib.data import load_dataset
from collm_lib.llm import LLMConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help='"smoke" | "cpu" | "gpu" (default: $COLLM_PROFILE or cpu)')
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", default="smollm2-135m", help="embedded default or a Hugging Face model folder")
    parser.add_argument("--seed", type=int, default=2023)
    args = parser.parse_args()
    profile = settings.profile_name(args.profile)
    splits = load_dataset(args.dataset, args.data_dir)
    mf_dir = collab.ensure_mf(splits, collab.config_for_profile(profile, dataset=args.dataset, seed=args.seed))
    summary, stage1_dir = {}, None
    for stage in (1, 2):
        config = train.config_for_profile(profile, stage=stage, dataset=args.dataset, seed=args.seed,
                                          llm=LLMConfig(model=args.model))
        result = stages.run_stage(splits, config, stage1_dir=stage1_dir, mf_dir=mf_dir if stage == 2 else None)
        stage1_dir = result["run_dir"]
        summary[f"stage{stage}"] = {"run_dir": result["run_dir"], "test": result["test"]["all"],
                                    "warm": result["test"].get("warm"), "cold": result["test"].get("cold"),
                                    "fit": {k: v for k, v in result["fit"].items() if k != "history"}}
    summary["mf_same_rows"] = stages.baselines_on_same_rows(splits, summary["stage2"]["run_dir"], mf_dir)["MF"]["test"]
    if settings.distributed()[0] == 0:
        print(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
