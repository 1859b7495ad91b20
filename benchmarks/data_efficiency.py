"""Data efficiency on the simulator thickness task: test accuracy versus the number of labels, trained from
scratch and fine-tuned from a SimCLR backbone pretrained on unlabelled simulator crops.

    python benchmarks/data_efficiency.py [--labels 50 200 1000] [--repeats 3] [--steps 300] [--work DIR]

Steps, each what the command line does (the script calls the same functions in one process, to save
the start-up time of ~30 separate commands):

1. data, from disjoint sets of simulated chips (graphene on 90 nm SiO2, 1.15 µm pixels, 32 px crops):
     flakehunter simulate dataset --task thickness --classes 1L,2L,3L --count 1200 --seed 0    --out W/pool
     flakehunter simulate dataset --task thickness --classes 1L,2L,3L --count 900  --seed 500  --out W/test
     flakehunter simulate dataset --task thickness --classes all      --count 4000 --seed 1000 --out W/unlabelled
2. SimCLR on the unlabelled crops (their labels are never read):
     flakehunter pretrain --recipe configs/training/simclr.yaml --data W/unlabelled --out W/simclr
3. for N labels and repeat r (the N labels are a stratified draw from the pool, seeded by r):
     flakehunter train --recipe configs/training/thickness.yaml --data W/pool --limit N --seed r \
         --val-fraction 0 --epochs E --batch-size B --out W/runs/scratch-N-r
     ... the same plus --backbone-weights W/simclr/backbone.pt                  (SimCLR, fine-tuned)
     ... the same plus --backbone-weights W/simclr/backbone.pt --freeze-backbone (SimCLR, linear probe)
     flakehunter evaluate-model W/runs/...-N-r/best.pt --data W/test --out W/eval/...-N-r
   B = min(64, N/2) and E such that every run takes about --steps optimiser steps. No validation set is
   used (it would be more labels than the smallest budgets), so best.pt is the last epoch.

Writes W/results.json and W/results.md (the table in docs/data-efficiency.md) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("scratch", "simclr-finetune", "simclr-linear")


def main() -> None:
    from flakehunter.hardware.simulator.dataset import write_simulator_dataset
    from flakehunter.training.evaluate import evaluate_model
    from flakehunter.training.recipe import PretrainRecipe, TrainRecipe, build_recipe
    from flakehunter.training.simclr import pretrain
    from flakehunter.training.trainer import Trainer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per training run")
    parser.add_argument("--pool", type=int, default=1200)
    parser.add_argument("--test", type=int, default=900)
    parser.add_argument("--unlabelled", type=int, default=4000)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is faster on a busy CPU)")
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="default: the SimCLR recipe's")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fh-data-efficiency-"))
    work.mkdir(parents=True, exist_ok=True)
    say = print
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    for name, count, seed, classes in (("pool", args.pool, 0, "1L,2L,3L"), ("test", args.test, 500, "1L,2L,3L"),
                                       ("unlabelled", args.unlabelled, 1000, "all")):
        if not (work / name / "dataset.json").exists():
            meta = write_simulator_dataset(work / name, "thickness", count, classes=classes, seed=seed)
            say(f"{name}: {meta['count']} crops from {len(meta['chips'])} chips {meta['class_counts']}")
    timings["simulate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    backbone = work / "simclr" / "backbone.pt"
    if not backbone.exists() and any(v.startswith("simclr") for v in args.variants):
        overrides: dict[str, Any] = {"data": str(work / "unlabelled"), "out": str(work / "simclr"), "device": "cpu",
                                     "tensorboard": False, "threads": args.threads}
        if args.pretrain_epochs is not None:
            overrides["epochs"] = args.pretrain_epochs
        recipe = build_recipe(PretrainRecipe, REPO / "configs/training/simclr.yaml", overrides)
        pretrain(recipe, echo=say)
    timings["pretrain_s"] = time.perf_counter() - t0

    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for n in args.labels:
        batch = min(64, n // 2)
        steps_per_epoch = n // batch
        epochs = max(1, math.ceil(args.steps / steps_per_epoch))
        for r in range(args.repeats):
            for variant in args.variants:
                name = f"{variant}-{n}-{r}"
                overrides: dict[str, Any] = {
                    "data": str(work / "pool"), "out": str(work / "runs" / name), "limit": n, "seed": r,
                    "val_fraction": 0, "early_stopping": None, "epochs": epochs, "batch_size": batch,
                    "device": "cpu", "tensorboard": False, "threads": args.threads,
                }
                if variant != "scratch":
                    overrides["backbone_weights"] = str(backbone)
                if variant == "simclr-linear":
                    overrides["freeze_backbone"] = True
                t_run = time.perf_counter()
                if not (work / "runs" / name / "summary.json").exists():
                    recipe = build_recipe(TrainRecipe, REPO / "configs/training/thickness.yaml", overrides)
                    Trainer(recipe).run()
                report = evaluate_model(work / "runs" / name / "best.pt", work / "test", work / "eval" / name,
                                        device="cpu")
                row = {"labels": n, "repeat": r, "variant": variant, "accuracy": report["accuracy"],
                       "macro_f1": report["macro_f1"], "epochs": epochs, "batch_size": batch,
                       "wall_s": time.perf_counter() - t_run}
                results.append(row)
                say(f"{name}: test accuracy {row['accuracy']:.4f} ({row['wall_s']:.0f} s)")
    timings["train_and_evaluate_s"] = time.perf_counter() - t0
    timings["total_s"] = sum(timings.values())

    table = _table(results, args.labels, args.variants, args.test)
    (work / "results.json").write_text(json.dumps({"results": results, "timings": timings, "args": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}, indent=2))
    (work / "results.md").write_text(table + "\n")
    print()
    print(table)
    print()
    print(" ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    print(f"files in {work}")


def _table(results: list[dict[str, Any]], labels: list[int], variants: list[str], n_test: int) -> str:
    names = {"scratch": "from scratch", "simclr-finetune": "SimCLR, fine-tuned",
             "simclr-linear": "SimCLR, linear probe"}
    lines = ["| labels | " + " | ".join(names[v] for v in variants) + " |",
             "|---:|" + "---:|" * len(variants)]
    for n in labels:
        cells = []
        for v in variants:
            acc = [r["accuracy"] for r in results if r["labels"] == n and r["variant"] == v]
            spread = f" ± {statistics.stdev(acc):.3f}" if len(acc) > 1 else ""
            cells.append(f"{statistics.mean(acc):.3f}{spread}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines.append(f"\nTest accuracy on {n_test} crops (1L / 2L / 3L), mean ± standard deviation over repeats.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
