"""LLM prompts and seconds per user: Faiss retrieve-then-rank vs the LLM scoring the whole catalogue (ML-1M).

Loads the stage-2 checkpoint (default: notebook 04's run of the profile), samples a few warm test users and
measures, per user: the Faiss top-K search plus the LLM scoring of the K candidates, and the LLM scoring the
user's whole unseen catalogue (~3,150 prompts), both through the shared-prefix scorer (one history pass per
user, collm_lib.scoring). Full-prompt scoring (no shared prefix) is measured on the K candidates and on a seeded
sample of the first user's catalogue; its whole-catalogue time is extrapolated from that rate (~23 min per user
on 2 cores) and the JSON says so.

    python benchmarks/bench_rerank.py                          # -> results/rerank_cpu_ml1m.json
    python benchmarks/bench_rerank.py --users 5 --catalogue-sample 400
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from collm_lib import catalogue as C, configs, io, plan_runs, rerank, retrieval, runs, settings, stages
from collm_lib.data import load_dataset
from collm_lib.prompts import default_template

from paths import portable  # noqa: E402  (benchmarks/paths.py: this script's folder is on sys.path)

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu", help="whose stage-2 run: notebook 04's at this profile's defaults")
    p.add_argument("--stage-dir", type=Path, help="stage-2 folder (default: plan_runs.main_runs(profile)['stage2'])")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--users", type=int, default=3, help="warm test users measured")
    p.add_argument("--k", type=int, default=50, help="candidates the LLM scores per user")
    p.add_argument("--index", choices=configs.KINDS, default="hnsw")
    p.add_argument("--catalogue-sample", type=int, default=200,
                   help="prompts of one user's whole catalogue actually scored to measure prompts/s")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=2023)
    p.add_argument("--out", type=Path, help="result JSON (default: results/rerank_<device>_ml1m.json)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    seed = settings.set_seed(args.seed)
    splits = load_dataset("ml-1m", args.data_dir)
    stage_dir = args.stage_dir or plan_runs.main_runs(args.profile, splits, args.seed)["stage2"]
    if runs.finished(stage_dir) is None:
        raise SystemExit(f"no finished stage-2 run in {stage_dir}: run notebooks 02-04 (or `collm stages`) first")
    dev = settings.device()
    out = args.out or RESULTS / f"rerank_{'cpu' if dev.type == 'cpu' else 'gpu'}_ml1m.json"
    load_start, t_start = os.getloadavg(), time.perf_counter()
    model, bundle, stage_config = stages.load_trained(stage_dir, device=dev)
    template = stage_config.template or default_template(splits.name, with_ids=True)
    titles = C.item_titles(splits)
    warm_users, warm_items = C.train_ids(splits)
    user_tab, item_tab = C.mf_tables(model.hybrid.collab, splits.n_users, splits.n_items)
    catalogue = np.array(sorted(i for i in titles if 0 < i < len(item_tab)), dtype=np.int64)
    users = rerank.sample_test_users(splits, args.users, args.seed, warm_users)
    index_config = retrieval.IndexConfig(kind=args.index, use_gpu=False)
    t0 = time.perf_counter()
    index = retrieval.VectorIndex(index_config).build(item_tab[catalogue], catalogue)
    build_s = time.perf_counter() - t0

    def timed_scores(frame, shared: bool) -> float:
        _, seconds = rerank.llm_scores(model, bundle, frame, template, stage_config.max_history, args.batch_size,
                                       progress=False, shared_prefix=shared)
        return seconds

    rows = []
    for user in users.itertuples(index=False):
        one, seen = users[users["uid"] == user.uid], np.asarray(user.seen, dtype=np.int64)
        t0 = time.perf_counter()
        _, ids = index.search(user_tab[[user.uid]], args.k, [seen])
        search_s = time.perf_counter() - t0
        cands = rerank.candidate_frame(one, list(ids), titles, warm_users, warm_items)
        unseen = rerank.candidate_frame(one, [np.setdiff1d(catalogue, seen)], titles, warm_users, warm_items)
        rerank_s, rerank_full_s, catalogue_s = (timed_scores(cands, True), timed_scores(cands, False),
                                                timed_scores(unseen, True))
        rows.append({"uid": user.uid, "rerank_prompts": len(cands), "search_s": search_s,
                     "rerank_s": search_s + rerank_s, "rerank_full_prompts_s": search_s + rerank_full_s,
                     "full_catalogue_prompts": len(unseen), "full_catalogue_s": catalogue_s})
        print(f"user {user.uid}: re-rank {len(cands)} prompts in {search_s + rerank_s:.1f} s "
              f"({search_s + rerank_full_s:.1f} s as full prompts); whole catalogue {len(unseen)} prompts in "
              f"{catalogue_s:.0f} s", flush=True)

    first = users.head(1)
    unseen_items = np.setdiff1d(catalogue, np.asarray(first["seen"].iloc[0], dtype=np.int64))
    sample = np.random.default_rng(args.seed).choice(unseen_items, min(args.catalogue_sample, len(unseen_items)),
                                                     replace=False)
    frame = rerank.candidate_frame(first, [sample], titles, warm_users, warm_items)
    full_rate = len(frame) / timed_scores(frame, False)
    for r in rows:
        r["full_catalogue_full_prompts_s_extrapolated"] = r["full_catalogue_prompts"] / full_rate
    mean = lambda key: float(np.mean([r[key] for r in rows]))  # noqa: E731
    summary = {
        "rerank_prompts_per_user": mean("rerank_prompts"), "rerank_seconds_per_user": mean("rerank_s"),
        "rerank_seconds_per_user_full_prompts": mean("rerank_full_prompts_s"),
        "full_catalogue_prompts_per_user": mean("full_catalogue_prompts"),
        "full_catalogue_seconds_per_user": mean("full_catalogue_s"),
        "full_catalogue_prompts_per_s": mean("full_catalogue_prompts") / mean("full_catalogue_s"),
        "full_catalogue_seconds_per_user_full_prompts_extrapolated": mean("full_catalogue_full_prompts_s_extrapolated"),
        "full_prompts_per_s_measured": full_rate,
        "llm_calls_saved_factor": mean("full_catalogue_prompts") / mean("rerank_prompts"),
        "time_saved_factor": mean("full_catalogue_s") / mean("rerank_s"),
        "shared_prefix_speedup_whole_catalogue": mean("full_catalogue_full_prompts_s_extrapolated")
        / mean("full_catalogue_s"),
    }
    result = {
        "run_info": io.run_info(seed), "stage_dir": portable(stage_dir), "template": template,
        "catalogue_items": len(catalogue), "k": args.k, "index": index.describe(), "index_build_s": build_s,
        "measured": "re-rank (shared prefix and full prompts) and whole catalogue (shared prefix), every user",
        "extrapolation": (f"whole catalogue as full prompts = unseen catalogue size / prompts/s measured by scoring "
                          f"{len(frame)} seeded prompts of user {int(first['uid'].iloc[0])}'s unseen catalogue"),
        "summary": summary, "users": rows, "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
        "args": {k: portable(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "total_wall_s": round(time.perf_counter() - t_start, 1),
    }
    io.write_json(out, result)
    print({k: round(v, 2) for k, v in summary.items()})
    print(f"wrote {out} ({result['total_wall_s']} s)")


if __name__ == "__main__":
    main()
