"""Train several recipes for the same wall-clock budget on the same data and device, and compare them.

    python -m shortgan.compare --configs configs/mlp_bn_gan.yaml configs/dcgan.yaml configs/quickstart.yaml \\
        --seconds 300 --classifier classifier.ckpt --out comparison/

Each recipe trains until it has spent `--seconds` of training time (evaluation time excluded) and is
evaluated at `--points` evenly spaced times (and at 0 s) — or, with `--full_length`, for its config's
own `trainer.max_epochs`, evaluated at `--points` evenly spaced epochs — with a digit classifier: Fréchet distance of
its features (classifier FID), precision/recall, class coverage, class KL and classifier score, on
`--num_samples` generated images against a reference split of the dataset (`--reference`: the test
split, or the larger training split). The other split's real images, scored the same way against the
same reference, give the real-vs-real value; where that split has fewer images than `--num_samples`,
the samples are also scored in disjoint chunks of its size (mean and spread), so every number has
its real-vs-real value at the same sizes beside it. Writes into `--out`:
`comparison.md` (tables), `fid_vs_time.png` (one line per recipe), `samples/<recipe>.png`,
`results.json` (every evaluation) and `runs/` (each recipe's run folder, for TensorBoard).
"""

import json
import sys
import time
from pathlib import Path
from typing import Literal, Optional

import lightning as L
import torch
from jsonargparse import ArgumentParser
from torchvision.utils import save_image

from shortgan import metrics
from shortgan.cli import build_cli, exit_on_user_error
from shortgan.data import DatasetName, ImageDataModule, InMemoryImages
from shortgan.errors import UserError
from shortgan.judge import load_classifier
from shortgan.networks import DigitClassifier


@torch.no_grad()
def judge(
    classifier: DigitClassifier, images: torch.Tensor, batch_size: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """The classifier's features (N, F) and logits (N, K) of images in [-1, 1], on the CPU."""
    features = torch.cat([classifier.features(x) for x in images.split(batch_size)])
    return features.cpu(), classifier.head(features).cpu()


def sample_quality(
    fake: tuple[torch.Tensor, torch.Tensor], real: tuple[torch.Tensor, torch.Tensor],
    real_labels: Optional[torch.Tensor] = None, fake_labels: Optional[torch.Tensor] = None,
) -> dict[str, float]:  # fmt: skip
    """The domain metrics of fakes against reals, each given as (features, logits); with labels (a
    conditional generator's requested classes), class consistency and intra-FID too. An
    unconditional generator's intra-FID groups its samples by the class the classifier gives them,
    so the two kinds of recipe can be compared on it."""
    quality = metrics.domain_quality(
        real[0], real[1], fake[0], fake[1], real_labels=real_labels, fake_labels=fake_labels
    )
    if fake_labels is None and real_labels is not None:
        quality["intra_fid"] = metrics.intra_fid(real[0], real_labels, fake[0], fake[1].argmax(1))
    quality["fid"] = quality.pop("domain_fid")
    quality["coverage"] = int(quality["coverage"])
    return {k: v if isinstance(v, int) else float(v) for k, v in quality.items()}


def scored(
    fake: tuple[torch.Tensor, torch.Tensor], real: tuple[torch.Tensor, torch.Tensor], real_labels: Optional[torch.Tensor],
    fake_labels: Optional[torch.Tensor], size: int,
) -> dict:  # fmt: skip
    """`sample_quality` of all fakes; where `size` is smaller than their number, also under "same_size"
    the mean ("fid", "precision", "recall") and standard deviation ("…_sd") over disjoint chunks of
    `size` fakes, each scored against the whole reference (the sizes of the real-vs-real value)."""
    row = sample_quality(fake, real, real_labels, fake_labels)
    n = len(fake[0])
    if size < n:
        chunks = [
            sample_quality((fake[0][i : i + size], fake[1][i : i + size]), real, real_labels,
                           None if fake_labels is None else fake_labels[i : i + size])
            for i in range(0, n - size + 1, size)
        ]  # fmt: skip
        same = {"size": size, "chunks": len(chunks)}
        for key in ("fid", "precision", "recall"):
            values = torch.tensor([c[key] for c in chunks])
            same[key], same[f"{key}_sd"] = float(values.mean()), float(values.std()) if len(values) > 1 else 0.0
        row["same_size"] = same
    return row


class TimedEvaluation(L.Callback):
    """Stops training after `seconds` of training time and evaluates G at `points` evenly spaced times;
    with `seconds` None, leaves the run its own length (`trainer.max_epochs`) and evaluates G at `points`
    evenly spaced epochs.

    The clock excludes the evaluations themselves, so every recipe gets the same training time.

    Args:
        classifier: judges the images.
        real_images: reference images in [-1, 1].
        real_labels: their classes (a conditional generator's metrics judge classes too).
        seconds: training-time budget; None: the run's own epochs.
        points: evaluations after 0 s (the last at the end of training).
        num_samples: generated images per evaluation; a conditional generator draws their classes by
            its training split's class frequencies (`draw_classes`).
        seed: seed of the evaluation noise and classes (the same at every point).
        same_size: also score the samples in chunks of this many (`scored`); None: not.
    """

    def __init__(
        self, classifier: DigitClassifier, real_images: torch.Tensor, seconds: Optional[float], points: int = 5,
        num_samples: int = 1000, seed: int = 0, real_labels: Optional[torch.Tensor] = None,
        same_size: Optional[int] = None,
    ) -> None:  # fmt: skip
        self.classifier, self.real_images, self.real_labels = classifier, real_images, real_labels
        self.seconds, self.num_samples, self.seed = seconds, num_samples, seed
        self.same_size = same_size or num_samples
        self.points = points
        self.times = [seconds * (i + 1) / points for i in range(points)] if seconds is not None else []
        self.epochs: list[int] = []  # with seconds None: the epochs after which to evaluate
        self.rows: list[dict] = []

    def training_seconds(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def training_clock(self) -> Optional[tuple[float, float]]:
        """(seconds trained, the budget): the GAN's progress-keyed schedules end with the budget (None
        for a run of its own length: they end with its epochs)."""
        return None if self.seconds is None else (self.training_seconds(), self.seconds)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.classifier.to(pl_module.device)
        self.real = judge(self.classifier, self.real_images.to(pl_module.device))
        self.start, self.paused, self.batches = time.perf_counter(), 0.0, 0
        if self.seconds is None:
            if trainer.max_epochs is None or trainer.max_epochs < 1:
                raise UserError("--full_length: the config must set trainer.max_epochs")
            self.epochs = sorted({round(trainer.max_epochs * (i + 1) / self.points) for i in range(self.points)})
        self.evaluate(trainer, pl_module, 0.0)
        self.start, self.paused = time.perf_counter(), 0.0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self.batches += 1
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()  # the clock must see the work, not just its launch
        seconds = self.training_seconds()
        passed = [t for t in self.times if seconds >= t]
        if passed:  # one evaluation even if a slow batch crossed several points
            self.times = self.times[len(passed) :]
            self.evaluate_off_the_clock(trainer, pl_module, seconds)
        if self.seconds is not None and seconds >= self.seconds:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.epochs and trainer.current_epoch + 1 >= self.epochs[0]:
            self.epochs = [e for e in self.epochs if e > trainer.current_epoch + 1]
            self.evaluate_off_the_clock(trainer, pl_module, self.training_seconds())

    def evaluate_off_the_clock(self, trainer: L.Trainer, pl_module: L.LightningModule, seconds: float) -> None:
        """`evaluate`, its time kept off the training clock."""
        began = time.perf_counter()
        self.evaluate(trainer, pl_module, seconds)
        self.paused += time.perf_counter() - began

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, seconds: float) -> None:
        row = {"seconds": round(seconds, 2), "epoch": trainer.current_epoch, "batches": self.batches}
        row.update(score_model(pl_module, self.classifier, self.real, self.real_labels, self.num_samples,
                               self.seed, self.same_size))  # fmt: skip
        self.rows.append(row)


@torch.no_grad()
def score_model(
    model: L.LightningModule, classifier: DigitClassifier, real: tuple[torch.Tensor, torch.Tensor],
    real_labels: Optional[torch.Tensor], num_samples: int, seed: int = 0, same_size: Optional[int] = None,
) -> dict:  # fmt: skip
    """`scored` of `num_samples` images drawn as the model samples them (rejection by D included, if it
    is set; a conditional model's classes by its training split's frequencies), from noise and classes
    seeded by `seed` — the same at every call, so evaluations of one run differ only by its weights."""
    seeded = torch.Generator(device=model.device).manual_seed(seed)
    labels = model.draw_classes(num_samples, seeded) if getattr(model, "num_classes", 0) else None
    sizes = [min(500, num_samples - i) for i in range(0, num_samples, 500)]
    classes = labels.split(500) if labels is not None else [None] * len(sizes)
    fake = torch.cat([model.draw(k, y, seeded) for k, y in zip(sizes, classes)])
    fake_labels = None if labels is None else labels.cpu()
    return scored(judge(classifier, fake), real, real_labels, fake_labels, same_size or num_samples)


def train_recipe(
    config: str,
    name: str,
    evaluation: TimedEvaluation,
    dataset: str,
    out: Path,
    accelerator: str,
    data_dir: str = "data",
) -> L.LightningModule:
    """Fit one config (several YAMLs joined by `+` are given in turn) under the evaluation's clock
    (for its own `max_epochs` if the evaluation has no time budget); returns the trained model."""
    unbounded = ["--trainer.max_epochs", "-1"] if evaluation.seconds is not None else []
    args = [
        "fit", *(a for part in config.split("+") for a in ("--config", part)), "--run_name", name, "--data.init_args.dataset", dataset,
        "--data.init_args.data_dir", data_dir, *unbounded, "--trainer.default_root_dir", str(out / "runs"),
        "--trainer.accelerator", accelerator, "--trainer.enable_progress_bar", "false",
        # The comparison judges every recipe itself, off the clock; the runs' own metrics would be on it.
        "--model.init_args.classifier_checkpoint", "null",
    ]  # fmt: skip
    cli = build_cli(
        args, trainer_defaults={"callbacks": [evaluation]},
    )  # fmt: skip
    return cli.model


def write_report(results: dict[str, dict], out: Path, command: str) -> None:
    """comparison.md and fid_vs_time.png from {recipe: {"config", "rows"}}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, result in results.items():
        if name == "__reference__":
            continue
        rows = result["rows"]
        seconds = [r["seconds"] for r in rows]
        axes[0].plot(seconds, [r["fid"] for r in rows], marker="o", label=name)
        axes[1].plot(seconds, [r["recall"] for r in rows], marker="o", label=name)
    axes[0].set(xlabel="training seconds", ylabel="classifier FID (lower is better)", yscale="log")
    axes[1].set(xlabel="training seconds", ylabel="recall (higher is better)", ylim=(0, 1))
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "fid_vs_time.png", dpi=120)
    plt.close(fig)

    reference = results.get("__reference__")
    recipes = {name: result for name, result in results.items() if name != "__reference__"}
    lines = [f"Command: `{command}`", ""]
    if reference is not None:
        lines += [
            f"Reference: {reference['reference_size']} real images ({reference['reference']} split); "
            f"{reference['num_samples']} samples per evaluation. Real-vs-real: {reference['size']} images of the "
            f"other split against the same reference.", "",
        ]  # fmt: skip
    lines += [
        "| recipe | config | epochs | batches/s | FID ↓ | precision ↑ | recall ↑ | classes covered | class KL ↓ "
        "| classifier score ↑ | class consistency ↑ | intra-FID ↓ |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for name, result in recipes.items():
        last = result["rows"][-1]
        rate = last["batches"] / last["seconds"] if last["seconds"] else float("nan")
        consistency = f"{last['class_consistency']:.3f}" if "class_consistency" in last else "—"
        intra = f"{last['intra_fid']:.2f}" if "intra_fid" in last else "—"
        lines.append(
            f"| {name} | `{result['config']}` | {last['epoch'] + 1} | {rate:.1f} | {last['fid']:.2f} | "
            f"{last['precision']:.3f} | {last['recall']:.3f} | {last['coverage']} | {last['class_kl']:.3f} | "
            f"{last['classifier_score']:.2f} | {consistency} | {intra} |"
        )
    if reference is not None:
        real = reference["real_vs_real"]
        same = reference["size"] == reference["num_samples"]
        lines.append(
            f"| real vs real ({reference['size']} images{'' if same else ', other sizes'}) | — | — | — | {real['fid']:.2f} | "
            f"{real['precision']:.3f} | {real['recall']:.3f} | {real['coverage']} | {real['class_kl']:.3f} | "
            f"{real['classifier_score']:.2f} | — | {real.get('intra_fid', float('nan')):.2f} |"
        )
        if not same:
            lines += [
                "", f"At the real-vs-real sizes ({reference['size']} samples against the same reference; mean ± sd "
                f"over disjoint chunks of the samples):", "",
                "| recipe | FID ↓ | precision ↑ | recall ↑ |", "|---|---:|---:|---:|",
            ]  # fmt: skip
            for name, result in recipes.items():
                s = result["rows"][-1]["same_size"]
                lines.append(
                    f"| {name} | {s['fid']:.2f} ± {s['fid_sd']:.2f} | {s['precision']:.3f} ± {s['precision_sd']:.3f} "
                    f"| {s['recall']:.3f} ± {s['recall_sd']:.3f} |"
                )
            lines.append(f"| real vs real | {real['fid']:.2f} | {real['precision']:.3f} | {real['recall']:.3f} |")
    lines += ["", "Classifier FID at each evaluation (training seconds):", ""]
    for name, result in recipes.items():
        lines.append(f"- {name}: " + ", ".join(f"{r['seconds']:.0f} s → {r['fid']:.2f}" for r in result["rows"]))
    (out / "comparison.md").write_text("\n".join(lines) + "\n")


Reference = Literal["test", "train"]


def real_reference(
    classifier: DigitClassifier, dataset: DatasetName, data_dir: str, reference: Reference, num_samples: int
) -> tuple[InMemoryImages, tuple[torch.Tensor, torch.Tensor], dict]:  # fmt: skip
    """The `reference` split of the dataset, the classifier's (features, logits) of it, and the instrument
    around it: its sizes and the real-vs-real value (as many images of the other split as samples, up
    to its size, against the same reference)."""
    data = ImageDataModule(dataset, data_dir)
    data.prepare_data()
    splits = {"train": data.load_split(train=True), "test": data.load_split(train=False)}
    ref, other = splits[reference], splits["test" if reference == "train" else "train"]
    size = min(num_samples, len(other))
    real = judge(classifier, ref.images)
    real_vs_real = sample_quality(judge(classifier, other.images[:size]), real, ref.labels, other.labels[:size])
    return ref, real, {"reference": reference, "reference_size": len(ref), "num_samples": num_samples, "size": size,
                 "real_vs_real": real_vs_real}  # fmt: skip


def compare(
    configs: list[str], seconds: Optional[float], classifier: str, out: Path, dataset: DatasetName = "mnist_sample",
    data_dir: str = "data", points: int = 5, num_samples: int = 1000, accelerator: str = "auto", command: str = "",
    reference: Reference = "test",
) -> dict[str, dict]:  # fmt: skip
    """Train and evaluate every config against the `reference` split (for `seconds` of training, or for
    the config's own epochs if None); write the report into `out`;
    return the results ("__reference__" holds the instrument: its sizes and the real-vs-real value)."""
    judge_net = load_classifier(classifier, "--classifier")
    ref, _, instrument = real_reference(judge_net, dataset, data_dir, reference, num_samples)
    size = instrument["size"]
    results: dict[str, dict] = {"__reference__": instrument}
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    for config in configs:
        for part in config.split("+"):
            if not Path(part).is_file():
                raise UserError(f"--configs: no file at {part}")
        name = "+".join(Path(part).stem for part in config.split("+"))
        while name in results:  # the same config twice gets a second, numbered entry
            name += "_"
        evaluation = TimedEvaluation(judge_net, ref.images, seconds, points, num_samples, real_labels=ref.labels,
                                     same_size=size)  # fmt: skip
        model = train_recipe(config, name, evaluation, dataset, out, accelerator, data_dir)
        results[name] = {"config": config, "rows": evaluation.rows}
        noise = torch.randn(64, model.generator.latent_dim, generator=torch.Generator().manual_seed(0)).to(model.device)
        # Conditional: a row per class, the same noise down each column.
        images = model.class_rows(noise[:8]) if model.num_classes else model.sample(noise)
        save_image(images.cpu(), out / "samples" / f"{name}.png", nrow=8, normalize=True, value_range=(-1, 1),
                   pad_value=1.0)  # fmt: skip
        (out / "results.json").write_text(json.dumps(results, indent=1))
        write_report(results, out, command)  # after each recipe, so an interrupted run still has a report
    return results


def main(args: Optional[list[str]] = None) -> None:
    parser = ArgumentParser(prog="python -m shortgan.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", type=str, required=True,
                        help="Recipe YAMLs to train; a+b.yaml gives several in turn, e.g. "
                             "configs/kmnist.yaml+configs/unconditional.yaml.")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=300.0, help="Training seconds per recipe.")
    parser.add_argument("--full_length", type=bool, default=False,
                        help="Train each config for its own trainer.max_epochs instead of --seconds, evaluating "
                             "at --points evenly spaced epochs.")  # fmt: skip
    parser.add_argument("--classifier", type=str, required=True,
                        help="DigitClassifier state_dict, or a checkpoint with `network.` weights.")  # fmt: skip
    parser.add_argument("--out", type=str, default="comparison", help="Folder for the report.")
    parser.add_argument("--dataset", type=DatasetName, default="mnist_sample", help="Dataset every recipe trains on.")
    parser.add_argument("--data_dir", type=str, default="data", help="Where torchvision datasets live.")
    parser.add_argument("--points", type=int, default=5, help="Evaluations per recipe after the one at 0 s.")
    parser.add_argument("--num_samples", type=int, default=1000, help="Generated images per evaluation.")
    parser.add_argument("--reference", type=Reference, default="test",
                        help="The real images the samples are judged against: the test split, or the training "
                             "split (larger; the test split then gives the real-vs-real value).")  # fmt: skip
    parser.add_argument("--accelerator", type=str, default="auto", help="cpu, gpu or auto, for every recipe.")
    parser.add_argument("--threads", type=Optional[int], default=None,
                        help="CPU threads for torch (default: torch's choice). Use 1 on a busy CPU: OpenMP threads "
                             "waiting on a descheduled sibling can make every step many times slower.")  # fmt: skip
    cfg = parser.parse_args(args)
    if cfg.seconds <= 0 or cfg.points < 1 or cfg.num_samples < 10:
        parser.error("--seconds must be > 0, --points >= 1 and --num_samples >= 10")
    command = "python -m shortgan.compare " + " ".join(sys.argv[1:] if args is None else args)
    torch.set_float32_matmul_precision("high")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with exit_on_user_error():
        compare(cfg.configs, None if cfg.full_length else cfg.seconds, cfg.classifier, Path(cfg.out), cfg.dataset, cfg.data_dir, cfg.points,
                cfg.num_samples, cfg.accelerator, command, cfg.reference)  # fmt: skip
    print(Path(cfg.out) / "comparison.md")


if __name__ == "__main__":
    main()
