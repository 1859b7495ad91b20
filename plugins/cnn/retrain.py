"""Retrain a shipped model from scratch and compare with its model card: the one command behind each weights file.

    python -m flakehunter.plugins.cnn.retrain thickness --out runs/retrain-thickness [--install]
    python -m flakehunter.plugins.cnn.retrain axis30 --out runs/retrain-axis30
    python -m flakehunter.plugins.cnn.retrain axis60 --out runs/retrain-axis60

Reads ``weights/NAME.json``: the simulator data it was trained on (``data``: the arguments of
``flakehunter simulate dataset``) and its training recipe (``recipe``: what ``flakehunter train`` was given),
makes the data into OUT/data, trains into OUT/run exactly as recorded, and prints the validation metric next
to the card's. ``--install`` then replaces the shipped weights with the new ones and rewrites their cards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from flakehunter.plugins.cnn.model_store import WEIGHTS_DIR

NAMES = ("thickness", "axis30", "axis60")


def make_data(data: dict[str, Any], out: Path) -> None:
    """``flakehunter simulate dataset`` with the card's arguments."""
    from flakehunter.hardware.simulator.foreign_dataset import write_axis_dataset, write_segment_dataset

    options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k not in ("task", "count")}
    if data["task"] == "segment":
        write_segment_dataset(out, int(data["count"]), echo=print, **options)
    else:
        write_axis_dataset(out, int(data["count"]), echo=None, **options)


def retrain(name: str, out: Path, install: bool = False) -> dict[str, Any]:
    """Make the data, train, compare; returns {"metric", "card", "retrained"}."""
    from flakehunter.training.recipe import TrainRecipe, build_recipe
    from flakehunter.training.trainer import Trainer

    card_path = WEIGHTS_DIR / f"{name}.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    if not (out / "data" / "dataset.json").is_file():
        make_data(card["data"], out / "data")
    recipe = build_recipe(TrainRecipe, None, {**card["recipe"], "data": str(out / "data"), "out": str(out / "run"),
                                              "val": None, "init_weights": None})
    summary = Trainer(recipe, echo=print).run()
    metric = summary["best"]["metric"]
    result = {"metric": metric, "card": card["best"]["value"], "retrained": summary["best"]["value"],
              "seconds": round(time.perf_counter() - t0)}
    print(f"{name}: validation {metric} {result['retrained']:.4f} (model card: {result['card']:.4f}), "
          f"{result['seconds']} s")
    if install:
        new_card = json.loads((out / "run" / "model.json").read_text(encoding="utf-8"))
        new_card.update({k: card[k] for k in ("data", "recipe", "retrain", "name") if k in card})
        new_card["weights"] = f"{name}.pt"
        shutil.copyfile(out / "run" / "model.pt", WEIGHTS_DIR / f"{name}.pt")
        card_path.write_text(json.dumps(new_card, indent=1) + "\n", encoding="utf-8")
        print(f"installed {WEIGHTS_DIR / (name + '.pt')}; update {name}.md with the new numbers")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=NAMES)
    parser.add_argument("--out", type=Path, required=True, help="working folder (data/ and run/)")
    parser.add_argument("--install", action="store_true", help="replace the shipped weights with the new ones")
    args = parser.parse_args(argv)
    if (args.out / "run" / "last.pt").exists():
        sys.exit(f"{args.out}: holds a training run already; choose another --out")
    retrain(args.name, args.out, args.install)


if __name__ == "__main__":
    main()
