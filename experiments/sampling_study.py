"""Issue 22 scratch study: what sampling that uses D does to a trained ShortGAN's samples.

Loads a run's config.yaml and last.ckpt, draws a pool of fakes from the weight-averaged G, scores
each with D's logit, then builds 1,000-sample sets by several rules and judges each with the
dataset's classifier (FID, precision, recall, as `shortgan.compare` does):
- plain: the first 1,000 fakes;
- drs q: discriminator rejection sampling (Azadi et al. 2019) in its simple form, each fake kept
  with probability min(1, exp(logit - c)), c the q-quantile of the pool's logits;
- top f: the fraction f of the pool with the highest logits.

    PYTHONPATH=. python experiments/sampling_study.py RUN_DIR --dataset kmnist --data_dir DIR --classifier CLF
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml

from shortgan.cli import build_cli
from shortgan.compare import judge, sample_quality
from shortgan.data import ImageDataModule
from shortgan.judge import load_classifier


def load_model(run: Path):
    config = yaml.safe_load((run / "config.yaml").read_text())
    for key in ("ckpt_path", "weights_only"):  # `fit` options; run=False parses without the subcommand
        config.pop(key, None)
    config["model"]["init_args"].pop("top_k", None)  # a scratch option of this study's session
    tmp = Path(tempfile.mkdtemp()) / "config.yaml"
    tmp.write_text(yaml.safe_dump(config))
    cli = build_cli(["--config", str(tmp), "--trainer.logger", "false"], run=False)
    model = cli.model
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def pool(model, n: int, labels=None, seed: int = 0, psi: float = 1.0):
    gen = torch.Generator().manual_seed(seed)
    z = psi * torch.randn(n, model.generator.latent_dim, generator=gen)
    g = model.sampling_generator().eval()
    d = model.discriminator.eval()
    xs, ls = [], []
    for i in range(0, n, 1000):
        y = None if labels is None else labels[i : i + 1000]
        x = g(z[i : i + 1000]) if y is None else g(z[i : i + 1000], y)
        xs.append(x)
        ls.append(d(x) if y is None else d(x, y))
    return torch.cat(xs), torch.cat(ls)


def shipped(model, clf, real, real_labels, a) -> None:
    """What `compare` and `predict` get: `GAN.draw` (shortgan/rejection.py), the compare's labels."""
    n = a.num_samples
    labels = real_labels[:n] if model.num_classes else None
    results = {}
    for quantile in (None, 0.8, 0.9, 1.0):
        model.hparams.rejection_quantile = quantile
        rows = []
        for seed in range(3):
            began = time.perf_counter()
            fake = model.draw(n, labels, torch.Generator().manual_seed(seed))
            seconds = time.perf_counter() - began
            q = sample_quality(judge(clf, fake), real, real_labels, labels)
            rows.append({"fid": q["fid"], "precision": q["precision"], "recall": q["recall"], "seconds": seconds})
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        results[str(quantile)] = {"mean": mean, "runs": rows}
        print(
            f"rejection {quantile!s:5s} fid {mean['fid']:6.2f} P {mean['precision']:.3f} R {mean['recall']:.3f} "
            f"({mean['seconds']:.2f} s per {n} samples; FID per seed " + " ".join(f"{r['fid']:.1f}" for r in rows) + ")"
        )
    (a.run / "rejection_shipped.json").write_text(json.dumps(results, indent=1))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run", type=Path)
    p.add_argument("--dataset", default="kmnist")
    p.add_argument("--data_dir", default="data")
    p.add_argument("--classifier", required=True)
    p.add_argument("--pool", type=int, default=20000)
    p.add_argument("--num_samples", type=int, default=1000)
    p.add_argument(
        "--shipped",
        action="store_true",
        help="only the product path: model.draw with rejection_quantile null / 0.8 / 0.9 / 1, three seeds",
    )
    a = p.parse_args()
    torch.set_grad_enabled(False)
    model = load_model(a.run)
    clf = load_classifier(a.classifier)
    data = ImageDataModule(a.dataset, a.data_dir)
    data.prepare_data()
    data.setup("test")
    real_images, real_labels = data.test_set.images[: a.num_samples], data.test_set.labels[: a.num_samples]
    real = judge(clf, real_images)
    if a.shipped:
        return shipped(model, clf, real, real_labels, a)
    # A conditional model: the pool's classes in turn, as `predict` asks for them.
    labels = torch.arange(a.pool) % model.num_classes if model.num_classes else None
    x, logit = pool(model, a.pool, labels)
    n = a.num_samples
    print(f"logits: mean {logit.mean():.3f} std {logit.std():.3f} min {logit.min():.3f} max {logit.max():.3f}")
    gen = torch.Generator().manual_seed(1)
    results = {}

    def score(name, chosen):
        chosen = chosen[:n]
        q = sample_quality(judge(clf, x[chosen]), real, real_labels, None if labels is None else labels[chosen])
        results[name] = {k: q[k] for k in ("fid", "precision", "recall", "coverage", "class_kl", "intra_fid")}
        print(
            f"{name:10s} fid {q['fid']:6.2f} P {q['precision']:.3f} R {q['recall']:.3f} "
            f"kl {q['class_kl']:.3f} intra {q['intra_fid']:.1f} (from {len(chosen)})"
        )

    score("plain", torch.arange(n))
    for qt in (0.5, 0.8, 0.9, 0.95, 1.0):
        c = torch.quantile(logit, qt)
        accept = torch.rand(len(logit), generator=gen) < torch.exp(logit - c).clamp(max=1)
        idx = accept.nonzero().squeeze(1)
        print(f"  drs {qt}: acceptance {accept.float().mean():.3f}")
        if len(idx) >= n:
            score(f"drs {qt}", idx)
    for f in (0.8, 0.5, 0.3):
        k = int(f * len(logit))
        score(f"top {f}", logit.topk(k).indices[torch.randperm(k, generator=gen)])
    for psi in (0.5, 0.7, 0.85, 1.15, 1.3):
        x, logit = pool(model, n, None if labels is None else labels[:n], psi=psi)
        score(f"psi {psi}", torch.arange(n))
    (a.run / "sampling_study.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
