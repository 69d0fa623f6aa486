"""Seconds the domain metrics take for N real + N generated images on this machine, and the
real-vs-real floor of every number (MNIST sample: train split against test split).

    python benchmarks/domain_metrics.py --classifier runs/classifier_quickstart/version_0/checkpoints/best.ckpt
"""

import argparse
import time

import torch

from shortgan.data import load_mnist_sample, to_unit_range
from shortgan.evaluation import DomainQuality
from shortgan.judge import load_classifier
from shortgan.networks import DigitClassifier, ShortGANGenerator


def evaluate(classifier, real, fake, batch_size=500) -> tuple[dict[str, float], float, float]:
    metric = DomainQuality(classifier)
    start = time.perf_counter()
    for i in range(0, len(real), batch_size):
        metric.update(real[i : i + batch_size], real=True)
        metric.update(fake[i : i + batch_size], real=False)
    updated = time.perf_counter()
    numbers = {k: round(float(v), 4) for k, v in metric.compute().items()}
    return numbers, updated - start, time.perf_counter() - updated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", help="a Classifier checkpoint (default: an untrained DigitClassifier)")
    parser.add_argument("--num_samples", type=int, default=10_000)
    args = parser.parse_args()
    torch.manual_seed(0)
    classifier = load_classifier(args.classifier) if args.classifier else DigitClassifier().eval()
    images, _ = load_mnist_sample()
    x = to_unit_range(images)
    test = torch.arange(len(x)) % 5 == 4

    if args.classifier:
        numbers, _, _ = evaluate(classifier, x[test], x[~test][torch.randperm(int((~test).sum()))[:1000]])
        print("real-vs-real floor, 1,000 train vs the 1,000 test digits:", numbers)

    # Cost does not depend on what the images show: reals are the sample repeated, fakes come
    # from an untrained ShortGAN generator (its time is not counted).
    n = args.num_samples
    real = x[torch.arange(n) % len(x)]
    with torch.no_grad():
        fake = torch.cat([ShortGANGenerator().eval()(torch.randn(500, 128)) for _ in range(0, n, 500)])[:n]
    numbers, update_s, compute_s = evaluate(classifier, real, fake)
    print(f"{n} real + {n} generated images on {torch.get_num_threads()} threads: "
          f"classifier {update_s:.2f} s, metrics {compute_s:.2f} s, total {update_s + compute_s:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
