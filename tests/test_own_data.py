"""Your own data (issue 28): folders of images and .npz arrays, read, split and trained on through the CLI."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from shortgan.cli import cli_main
from shortgan.data import ImageDataModule, dataset_classes
from shortgan.errors import UserError
from shortgan.image_files import convert, held_out, load_arrays, load_folder


def write_image(path: Path, value: int, size: tuple[int, int] = (28, 28), mode: str = "L") -> None:
    """An image whose every pixel is `value` (so a test can tell which file became which tensor)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value,) * len(mode)).save(path)


def class_folder(root: Path, names=("0", "1", "2", "10"), per_class: int = 20) -> Path:
    """Class subfolders, each image's grey level encoding its class (10·class + 5) and assorted sizes/modes."""
    for c, name in enumerate(names):
        for i in range(per_class):
            mode, size, ext = [("L", (28, 28), "png"), ("RGB", (40, 36), "jpg"), ("RGBA", (14, 14), "png")][i % 3]
            write_image(root / name / f"{i:03d}.{ext}", 10 * c + 5, size, mode)
    return root


def test_class_subfolders_give_labels_in_numeric_order_at_the_networks_shape(tmp_path):
    root = class_folder(tmp_path / "chars")
    images, labels, classes = load_folder(str(root), (1, 28, 28))
    assert classes == ["0", "1", "2", "10"]  # "10" after "2": numeric names sort as numbers
    assert images.shape == (80, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [20] * 4
    # Each image's grey level says its folder: the label of every image is its folder's index.
    for c in range(4):
        levels = images[labels == c].float().mean((1, 2, 3))
        assert (levels - (10 * c + 5)).abs().max() <= 1, c
    rgb = load_folder(str(root), (3, 32, 32))[0]
    assert rgb.shape == (80, 3, 32, 32)


def test_a_flat_folder_is_unlabelled_and_unreadable_files_are_skipped_with_a_count(tmp_path, caplog):
    for i in range(6):
        write_image(tmp_path / f"{i}.png", 100 + i)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with caplog.at_level("INFO"):
        images, labels, classes = load_folder(str(tmp_path), (1, 28, 28))
    assert classes == [] and len(images) == 6 and labels.tolist() == [0] * 6
    assert "Skipped 1 unreadable image files" in caplog.text and "broken.png" in caplog.text
    assert dataset_classes("folder", str(tmp_path)) == 0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.mkdir(), "no image files"),
        (lambda p: None, "no such folder"),
        (lambda p: (p.mkdir(), (p / "a.png").write_bytes(b"x")), "none of its 1 image files could be read"),
    ],
)
def test_a_folder_without_usable_images_ends_in_one_line(tmp_path, make, message):
    root = tmp_path / "mine"
    make(root)
    with pytest.raises(UserError, match=message):
        ImageDataModule("folder", str(root)).setup("fit")


def test_the_held_out_split_is_every_kth_image_of_each_class_and_the_same_every_run(tmp_path):
    labels = torch.tensor([0] * 20 + [1] * 10 + [2] * 3)
    mask = held_out(labels, 0.1)
    assert mask.nonzero().squeeze(1).tolist() == [9, 19, 29]  # class 2 has fewer than 10: none held out
    assert torch.equal(mask, held_out(labels, 0.1))
    dm = ImageDataModule("folder", str(class_folder(tmp_path / "chars")), batch_size=8, test_fraction=0.25)
    dm.setup("fit")
    assert len(dm.train_set) == 60 and len(dm.test_set) == 20
    assert torch.bincount(dm.test_set.labels).tolist() == [5] * 4
    # Validation judges the first num_eval_samples held-out images: in file order those would be the
    # first classes only, so the split comes in a fixed shuffled order.
    assert len(dm.test_set.labels[:8].unique()) >= 3
    again = ImageDataModule("folder", dm.hparams.data_dir, batch_size=8, test_fraction=0.25)
    assert torch.equal(again.load_split(train=False).labels, dm.test_set.labels)


def test_arrays_with_and_without_y(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "labelled.npz", x=x, y=np.arange(30) % 3)
    images, labels = load_arrays(str(tmp_path / "labelled.npz"), (1, 28, 28))
    assert torch.equal(images[:, 0], torch.from_numpy(x)) and labels.tolist() == (np.arange(30) % 3).tolist()
    assert dataset_classes("arrays", str(tmp_path / "labelled.npz")) == 3
    np.savez(tmp_path / "plain.npz", x=x.astype(np.float32) / 255)  # floats in [0, 1]
    images, labels = load_arrays(str(tmp_path / "plain.npz"), (1, 28, 28))
    assert labels is None and torch.equal(images[:, 0], torch.from_numpy(x))
    assert dataset_classes("arrays", str(tmp_path / "plain.npz")) == 0


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"images": np.zeros((4, 28, 28), np.uint8)}, "no array `x`"),
        ({"x": np.zeros((4, 28, 28), np.uint8), "y": np.zeros(3)}, "y has 3 labels for 4 images"),
        ({"x": np.zeros((4, 28), np.uint8)}, r"x must be images \(N, H, W\)"),
        ({"x": np.full((4, 28, 28), 7.0)}, "uint8 pixels or floats in"),
        ({"x": np.zeros((4, 28, 28, 2), np.uint8)}, "2 channels"),
    ],
)
def test_bad_arrays_end_in_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserError, match=message):
        load_arrays(str(tmp_path / "bad.npz"), (1, 28, 28))


def test_conversion_between_grayscale_and_rgb_and_sizes():
    gray = torch.full((2, 1, 28, 28), 200, dtype=torch.uint8)
    assert torch.equal(convert(gray, (3, 28, 28), "t"), gray.expand(-1, 3, -1, -1))
    red = torch.zeros(2, 3, 14, 14, dtype=torch.uint8)
    red[:, 0] = 255
    out = convert(red, (1, 28, 28), "t")
    assert out.shape == (2, 1, 28, 28) and (out == round(0.299 * 255)).all()  # luma of pure red


def test_a_split_smaller_than_a_batch_and_a_single_image_end_in_one_line(tmp_path):
    write_image(tmp_path / "one" / "a.png", 10)
    with pytest.raises(UserError, match="one image is not a dataset"):
        ImageDataModule("folder", str(tmp_path / "one")).setup("fit")
    for i in range(6):
        write_image(tmp_path / "six" / f"{i}.png", 10)
    with pytest.raises(UserError, match="fewer than one batch"):
        ImageDataModule("folder", str(tmp_path / "six"), batch_size=32).setup("fit")


# Through the CLI: the shipped conditional recipe, 2 epochs of 2 batches (eager: seconds), metrics on.
def fit(root: Path, data: str, dataset: str, *extra: str):
    return cli_main([
        "fit", "--config", "configs/kmnist.yaml", "--data.dataset", dataset, "--data.data_dir", data,
        "--data.batch_size", "8", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2",
        "--trainer.enable_progress_bar", "false", "--model.init_args.compile", "off",
        "--model.init_args.eval_every_n_epochs", "1", "--trainer.default_root_dir", str(root), *extra,
    ])  # fmt: skip


def logged(run: Path) -> set[str]:
    acc = EventAccumulator(str(run))
    acc.Reload()
    return set(acc.Tags()["scalars"])


@pytest.mark.slow
def test_a_class_folder_trains_conditionally_with_the_data_s_class_count_and_judge(tmp_path, capsys):
    data = class_folder(tmp_path / "chars", names=("a", "b", "c", "d", "e"), per_class=12)
    cli = fit(tmp_path / "runs", str(data), "folder")
    run = Path(cli.trainer.logger.log_dir)
    saved = yaml.safe_load((run / "config.yaml").read_text())["model"]["init_args"]
    assert saved["generator"]["init_args"]["num_classes"] == 5 == saved["discriminator"]["init_args"]["num_classes"]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["state_dict"]["generator.class_bias.weight"].shape[0] == 5
    tags = logged(run)
    assert {"val/domain_fid", "val/recall", "val/class_consistency", "val/coverage"} <= tags
    # The judge is cached beside the folder, not inside it among the images.
    assert [p.name.split("-")[0] for p in (tmp_path / "classifiers").iterdir()] == ["folder"]
    # Another class count than the checkpoint's: one line, not a size-mismatch traceback.
    class_folder(tmp_path / "chars", names=("f",), per_class=12)
    with pytest.raises(SystemExit):
        fit(tmp_path / "runs", str(data), "folder", "--trainer.max_epochs", "3", "--ckpt_path",
            str(run / "checkpoints" / "last.ckpt"))  # fmt: skip
    assert "error: The checkpoint's GAN was trained on 5 classes, this run's data have 6" in capsys.readouterr().err


@pytest.mark.slow
def test_a_flat_folder_trains_unconditionally_judged_by_a_rotation_classifier(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    with caplog.at_level("INFO"):
        cli = fit(tmp_path / "runs", str(tmp_path), "folder")
    assert "trains without the class" in caplog.text
    assert cli.model.num_classes == 0 and not cli.model.discriminator.minibatch_std_by_class
    tags = logged(Path(cli.trainer.logger.log_dir))
    assert {"val/domain_fid", "val/precision", "val/recall"} <= tags
    assert not {"val/coverage", "val/class_consistency"} & tags  # the judge's classes are rotations
    assert (tmp_path.parent / "classifiers").is_dir() and any("rotation" in p.name for p in (tmp_path.parent / "classifiers").iterdir())


@pytest.mark.slow
def test_arrays_and_an_rgb_32_pixel_shape_train_through_the_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "chars.npz", x=rng.integers(0, 256, (60, 20, 20, 3), dtype=np.uint8), y=np.arange(60) % 3)
    cli = fit(tmp_path / "runs", str(tmp_path / "chars.npz"), "arrays", "--data.image_shape", "[3, 32, 32]")
    assert cli.model.num_classes == 3 and cli.model.generator.image_shape == (3, 32, 32)
    assert cli.model.discriminator.num_classes == 3
    run = Path(cli.trainer.logger.log_dir)
    assert "val/domain_fid" in logged(run)
    predict = cli_main(["predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
                        "--data.num_samples", "6", "--samples_dir", str(tmp_path / "out")])  # fmt: skip
    assert predict is not None
    samples = np.load(tmp_path / "out" / "samples.npz")
    assert samples["x"].shape == (6, 32, 32, 3) and set(samples["y"].tolist()) <= {0, 1, 2}
    # The checkpoint under another image shape: one line naming the first weight that differs.
    with pytest.raises(SystemExit):
        cli_main(["predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
                  "--data.image_shape", "[1, 28, 28]", "--samples_dir", str(tmp_path / "out2")])  # fmt: skip
    assert "error: The checkpoint's generator" in capsys.readouterr().err


def test_the_judge_reads_any_shape_as_grayscale_28_pixels():
    from shortgan.judge import judge_view

    gray = torch.rand(2, 1, 28, 28) * 2 - 1
    assert judge_view(gray) is gray
    rgb = torch.zeros(2, 3, 56, 56)
    rgb[:, 1] = 1.0  # pure green at full intensity
    out = judge_view(rgb)
    assert out.shape == (2, 1, 28, 28) and torch.allclose(out, torch.full_like(out, 0.587))


def test_the_rotation_task_labels_each_turn():
    from shortgan.judge import rotations

    x = torch.arange(2 * 9, dtype=torch.float32).view(2, 1, 3, 3)
    turned, labels = rotations(x)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(turned[:2], x) and torch.equal(turned[2], torch.rot90(x[0], 1, (-2, -1)))
    assert torch.equal(turned[4], x[0].flip(-1).flip(-2))  # 180°


def test_a_judge_of_rotations_reports_no_class_numbers():
    from shortgan.evaluation import DomainQuality
    from shortgan.networks import DigitClassifier

    numbers, judge = {}, DigitClassifier(num_classes=4)
    real, fake = torch.rand(2, 8, 1, 28, 28) * 2 - 1
    for class_metrics in (True, False):
        metric = DomainQuality(judge, class_metrics=class_metrics)
        metric.update(real, real=True)
        metric.update(fake, real=False)
        numbers[class_metrics] = metric.compute()
    assert set(numbers[False]) == {"domain_fid", "precision", "recall"}
    assert {"coverage", "class_kl", "classifier_score"} <= set(numbers[True])
    assert all(torch.equal(numbers[False][k], numbers[True][k]) for k in numbers[False])


def test_a_28_pixel_only_model_refuses_another_image_shape_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", "configs/dcgan.yaml", "--data.image_shape", "[3, 32, 32]",
                  "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert "draw 1×28×28 images only" in capsys.readouterr().err


def config(dataset: str, data_dir: str, num_classes: int = 10, shape=(1, 28, 28)):
    from jsonargparse import Namespace

    net = lambda **extra: Namespace(class_path="x", init_args=Namespace(num_classes=num_classes, image_shape=(1, 28, 28), **extra))  # noqa: E731
    return Namespace(
        data=Namespace(class_path="shortgan.ImageDataModule",
                       init_args=Namespace(dataset=dataset, data_dir=data_dir, image_shape=shape)),
        model=Namespace(class_path="shortgan.GAN", init_args=Namespace(generator=net(class_batchnorm=True),
                                                                       discriminator=net(minibatch_std_by_class=True))),
    )  # fmt: skip


@pytest.mark.parametrize("classes, expected", [(("only",), 0), (("a", "b", "c"), 3)])
def test_the_networks_take_the_data_s_class_count_and_one_class_trains_without_it(tmp_path, classes, expected):
    from shortgan.cli import fit_networks_to_data

    for name in classes:
        write_image(tmp_path / name / "0.png", 10)
    cfg = config("folder", str(tmp_path), shape=(3, 32, 32))
    fit_networks_to_data(cfg)
    g, d = cfg.model.init_args.generator.init_args, cfg.model.init_args.discriminator.init_args
    assert g.num_classes == d.num_classes == expected
    assert g.image_shape == d.image_shape == (3, 32, 32)
    # The per-class parts go with the class (what configs/unconditional.yaml turns off).
    assert g.class_batchnorm == d.minibatch_std_by_class == (expected > 0)
    untouched = config("folder", str(tmp_path))
    fit_networks_to_data(untouched, count_classes=False)  # predict: the run's config.yaml holds the count
    assert untouched.model.init_args.generator.init_args.num_classes == 10
