"""Score a run's saved checkpoints with `shortgan.compare`'s instrument: the same judge, reference,
samples (noise, classes, sizes) and real-vs-real value as `compare --full_length` evaluates during
training, but after the fact — so a run too long for one sitting can be trained by `main.py fit`,
resumed with `--ckpt_path last`, and measured as a compared run would be.

    python experiments/score_checkpoints.py --run runs/fashion_mnist/version_0 --dataset fashion_mnist \\
        --data_dir DIR --classifier CLF --reference test --num_samples 10000 --out report.json

Scores every `epoch=*.ckpt` kept by the periodic checkpoint (every 10 epochs) and `last.ckpt`; prints
a row per checkpoint and writes them, with the instrument, to `--out` as JSON. `--every K` scores
only the kept checkpoints whose epoch count is a multiple of K (and the last).
"""

import argparse
import json
import re
from pathlib import Path

import lightning as L
import torch
import yaml
from jsonargparse import ArgumentParser

from shortgan.compare import real_reference, score_model
from shortgan.judge import load_classifier


def load_model(run: Path, state: dict) -> L.LightningModule:
    """The run's LightningModule as its config.yaml builds it, with the weights of the checkpoint
    `state` (the weight average and the class frequencies included), in eval mode."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    parser = ArgumentParser()
    parser.add_subclass_arguments(L.LightningModule, "model")
    # No judge for the run's own metrics: this script judges with --classifier.
    config["model"].setdefault("init_args", {})["classifier_checkpoint"] = None
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    model = instantiate(parser.parse_object({"model": config["model"]})).model
    model.load_state_dict(state["state_dict"])
    return model.eval()


def read(checkpoint: Path) -> dict:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)


def epochs_trained(state: dict) -> int:
    return int(state["epoch"]) + 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a run's version_N folder (config.yaml, checkpoints/)")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--classifier", required=True)
    parser.add_argument("--reference", choices=("test", "train"), default="test")
    parser.add_argument("--num_samples", type=int, default=10000)
    parser.add_argument("--every", type=int, default=1, help="only kept checkpoints at multiples of this many epochs")
    parser.add_argument("--out", default=None, help="JSON file for the rows and the instrument")
    args = parser.parse_args()
    torch.set_float32_matmul_precision("high")

    run = Path(args.run)
    # The periodic checkpoints are named by their epoch index (epoch=0019.ckpt: 20 epochs trained).
    kept = sorted(run.glob("checkpoints/epoch=[0-9][0-9][0-9][0-9].ckpt"), key=lambda p: int(re.findall(r"\d+", p.stem)[0]))
    checkpoints = [p for p in kept if (int(re.findall(r"\d+", p.stem)[0]) + 1) % args.every == 0]
    last = run / "checkpoints" / "last.ckpt"

    classifier = load_classifier(args.classifier, "--classifier")
    ref, real, instrument = real_reference(classifier, args.dataset, args.data_dir, args.reference, args.num_samples)
    rv = instrument["real_vs_real"]
    print(f"reference: {len(ref)} images ({args.reference} split); real vs real ({instrument['size']} images): "
          f"FID {rv['fid']:.2f} precision {rv['precision']:.3f} recall {rv['recall']:.3f}")
    rows = []
    for path in [*checkpoints, last] if last.exists() else checkpoints:
        state = read(path)
        epochs = epochs_trained(state)
        if path == last and rows and epochs <= rows[-1]["epochs"]:
            break  # last.ckpt is the newest kept checkpoint: scored already
        row = {"checkpoint": path.name, "epochs": epochs}
        row.update(score_model(load_model(run, state), classifier, real, ref.labels, args.num_samples,
                               same_size=instrument["size"]))
        rows.append(row)
        same = row.get("same_size")
        chunks = f" | at {same['size']}: FID {same['fid']:.2f} recall {same['recall']:.3f} ± {same['recall_sd']:.3f}" if same else ""
        print(f"{path.name} ({epochs} epochs): FID {row['fid']:.2f} precision {row['precision']:.3f} "
              f"recall {row['recall']:.3f} class consistency {row.get('class_consistency', float('nan')):.3f}{chunks}",
              flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps({"instrument": instrument, "rows": rows}, indent=1))
