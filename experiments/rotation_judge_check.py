"""Does the judge of unlabelled data (a classifier trained to tell rotations) rank generators as the
class-trained judge does? Both judge the same samples from a run's periodic checkpoints against the
test split; prints each checkpoint's FID / precision / recall under both, and their rank correlation.

    python experiments/rotation_judge_check.py --dataset kmnist --data_dir DIR --run RUN_FOLDER
"""

import argparse
from pathlib import Path

import torch
import yaml

from shortgan import metrics
from shortgan.checkpoints import generator_state_dict
from shortgan.data import ImageDataModule
from shortgan.export import build
from shortgan.judge import judge_view, rotations, train_classifier


def ranks(x: list[float]) -> torch.Tensor:
    return torch.tensor(x).argsort().argsort().float()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="kmnist")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--run", required=True, help="a GAN run's version_N folder (config.yaml, checkpoints/)")
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = ImageDataModule(args.dataset, args.data_dir, download=False)
    train, test = data.load_split(True), data.load_split(False)
    judges = {
        "class": train_classifier(judge_view(train.images), train.labels),
        "rotation": train_classifier(*rotations(judge_view(train.images))),
    }
    g_cfg = yaml.safe_load(Path(args.run, "config.yaml").read_text())["model"]["init_args"]["generator"]
    rows = []
    for ckpt in sorted(Path(args.run, "checkpoints").glob("epoch=00*.ckpt")):
        generator = build(g_cfg["class_path"], g_cfg["init_args"])
        generator.load_state_dict(generator_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)))
        generator.eval()
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(1)
            z = torch.randn(args.samples, generator.latent_dim)
            y = train.labels[torch.randint(len(train.labels), (args.samples,))]
            fake = generator(z, y) if getattr(generator, "num_classes", 0) else generator(z)
        row = {"checkpoint": ckpt.name}
        with torch.no_grad():
            for name, judge in judges.items():
                real_f, fake_f = judge.features(test.images), judge.features(fake)
                p, r = metrics.precision_recall(real_f, fake_f)
                row[name] = (metrics.frechet_distance(real_f, fake_f).item(), p.item(), r.item())
        rows.append(row)
        print(row["checkpoint"], *(f"{n}: FID {v[0]:.1f} P {v[1]:.3f} R {v[2]:.3f}" for n, v in row.items() if n != "checkpoint"))
    for i, what in enumerate(("FID", "precision", "recall")):
        a, b = ranks([r["class"][i] for r in rows]), ranks([r["rotation"][i] for r in rows])
        rho = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
        print(f"Spearman rank correlation of {what} under the two judges: {rho:.2f} ({len(rows)} checkpoints)")
