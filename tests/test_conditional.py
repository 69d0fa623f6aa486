"""Class-conditional ShortGAN (issue 17): networks that take a class, training that uses the batch's
labels, sampling and predicting by class, metrics that judge the classes, and an unconditional path
that is as it was."""

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from shortgan import losses, metrics
from shortgan.cli import cli_main
from shortgan.data import InMemoryImages, _batch_as_is, load_mnist_sample, to_unit_range
from shortgan.errors import UserError
from shortgan.explore import explore
from shortgan.gan import GAN
from shortgan.judge import load_classifier
from shortgan.generator_system import parse_classes
from shortgan.networks import DCGANDiscriminator, DCGANGenerator, ShortGANDiscriminator, ShortGANGenerator
from shortgan.pretraining import pretraining_loss
from unconditional_reference import REFERENCE, digest

# No domain metrics: these runs check classes, grids and resume (test_validation_logs_the_conditional_metrics
# checks the metrics), and the classifier would be cached in data/.
CONDITIONAL = ["--config", "configs/quickstart.yaml", "--config", "configs/conditional.yaml",
               "--trainer.enable_progress_bar", "false", "--model.init_args.pretrain_epochs", "1",
               "--model.init_args.classifier_checkpoint", "null"]  # fmt: skip


def conditional_gan(family: str = "shortgan", **kwargs) -> GAN:
    kwargs = {"pretrain_epochs": 0, "classifier_checkpoint": None, **kwargs}
    if family == "dcgan":
        return GAN(DCGANGenerator(channels=8, num_classes=10), DCGANDiscriminator(channels=8, num_classes=10), **kwargs)
    return GAN(
        ShortGANGenerator(channels=4, num_classes=10), ShortGANDiscriminator(channels=8, num_classes=10), **kwargs
    )


def class_vectors(generator: torch.nn.Module) -> torch.Tensor:
    """The generator's per-class parameters, one row per class."""
    return (generator.class_bias if hasattr(generator, "class_bias") else generator.class_map).weight


def loader(images: torch.Tensor, labels: torch.Tensor, batch_size: int = 16) -> DataLoader:
    return DataLoader(InMemoryImages(images, labels), batch_size=batch_size, shuffle=True, collate_fn=_batch_as_is)


def mnist_sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_mnist_sample()
    return to_unit_range(images[:n]), labels[:n]


def random_images(n: int) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1


def attached(model: GAN) -> GAN:
    """After one batch of class-0 images through Lightning: optimizers exist, so steps can be called."""
    L.Trainer(max_epochs=1, limit_train_batches=1, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False).fit(model, loader(random_images(16), torch.zeros(16, dtype=torch.long)))  # fmt: skip
    return model


# ---- networks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["shortgan", "dcgan"])
def test_both_network_families_take_a_class(family):
    g = (
        ShortGANGenerator(channels=4, num_classes=3)
        if family == "shortgan"
        else DCGANGenerator(channels=8, num_classes=3)
    )
    d = (
        ShortGANDiscriminator(channels=8, num_classes=3)
        if family == "shortgan"
        else DCGANDiscriminator(channels=8, num_classes=3)
    )
    g.eval(), d.eval()
    torch.nn.init.normal_(class_vectors(g))  # they start at zero: G begins unconditional
    z, x, zeros = torch.randn(4, g.latent_dim), random_images(4), torch.zeros(4, dtype=torch.long)
    assert not torch.allclose(g(z, zeros), g(z, torch.ones(4, dtype=torch.long)))
    assert not torch.allclose(d(x, zeros), d(x, torch.full((4,), 2)))
    for net, inputs in ((g, (z,)), (d, (x,))):
        with pytest.raises(ValueError, match="one class label per sample"):
            net(*inputs)
    # Unconditional networks of the family have no class parameters: their checkpoints are as before.
    plain = [DCGANGenerator(channels=8), DCGANDiscriminator(channels=8)] if family == "dcgan" else []
    assert all("class" not in key for net in plain for key in net.state_dict())


def test_an_unconditional_network_has_no_new_parameters():
    # Old checkpoints load as they are: the same state_dict keys as before conditioning existed.
    reference = json.loads(REFERENCE.read_text())
    keys = set(GAN(ShortGANGenerator(channels=4), ShortGANDiscriminator(channels=8, num_layers=3),
                   ema_decay=0.9, classifier_checkpoint=None).state_dict())  # fmt: skip
    assert keys == set(reference) - {"fixed_samples", "predict", "next_random"}


def test_the_unconditional_path_trains_as_it_did_before_conditioning():
    # tests/unconditional_reference.json was written by the code before issue 17, in float64: float32
    # rounding grew to 1e-4 on another CPU; float64's is some orders below this tolerance.
    reference, now = json.loads(REFERENCE.read_text()), digest()
    assert now.keys() == reference.keys()
    assert now["next_random"] == reference["next_random"]  # the same random draws, no more, no fewer
    for key, values in reference.items():
        assert now[key] == pytest.approx(values, rel=1e-9, abs=1e-12), key


def test_a_gan_whose_networks_disagree_on_the_classes_is_refused():
    with pytest.raises(UserError, match="num_classes"):
        GAN(ShortGANGenerator(channels=4, num_classes=10), ShortGANDiscriminator(channels=8))


# ---- training -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "loss"), [("shortgan", "bce"), ("shortgan", "hinge"), ("dcgan", "bce")])
@pytest.mark.parametrize("compile", ["off", "iteration"])
def test_a_g_step_learns_only_the_classes_it_was_given(compile, family, loss):
    # compile iteration uncompiled (backend null): the functional updates, whose maths the compiled run executes.
    model = attached(conditional_gan(family, g_steps=1, compile=compile, compile_backend=None, loss=loss))
    assert (model.iteration is not None) == (compile == "iteration")
    before = class_vectors(model.generator).detach().clone()
    # The G step draws fakes of the batch's classes (3 and 5): the other classes' vectors get no
    # gradient (class 0's moves on Adam's momentum from the first batch, which was all class 0).
    labels = torch.tensor([3, 5] * 4)
    model.adversarial_step(random_images(8), 0, labels)
    moved = (class_vectors(model.generator).detach() != before).any(1)
    assert moved.nonzero().flatten().tolist() == [0, 3, 5]


def test_conditional_pretraining_pairs_only_within_a_class():
    g = ShortGANGenerator(channels=4, num_classes=2)
    with torch.no_grad():
        g.class_bias.weight[1] += 50  # class 1 looks nothing like class 0
    seen = []
    g.register_forward_hook(lambda module, args, out: seen.append(args[1].clone()))
    real, labels = random_images(6), torch.tensor([0, 1, 0, 1, 0, 1])
    pretraining_loss(g, real, "nearest", candidates=4, labels=labels)
    pool_labels, paired = seen
    assert torch.equal(pool_labels, labels.repeat(4))  # candidates drawn for each real image's class
    assert torch.equal(paired, labels)  # and each image is pulled towards a sample of its own class


def test_the_d_step_and_the_gradient_penalty_use_the_labels():
    model = attached(conditional_gan(loss="wgan_gp", n_critic=2))  # iteration 0: the D step alone
    seen = []

    def record(module, args, kwargs, out):
        seen.append((args[1] if len(args) > 1 else kwargs["y"]).clone())

    model.discriminator.register_forward_hook(record, with_kwargs=True)
    labels = torch.tensor([1, 2, 3, 4])
    model.adversarial_step(random_images(4), 0, labels)
    assert len(seen) == 3 and all(torch.equal(y, labels) for y in seen)  # real, fake, and the penalty's mix


@pytest.mark.slow
def test_after_training_d_scores_a_real_image_lower_under_a_wrong_class():
    images, labels = mnist_sample(640)
    model = conditional_gan(pretrain_epochs=1)
    L.seed_everything(0)
    L.Trainer(max_epochs=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(model, loader(images, labels, 32))  # fmt: skip
    with torch.no_grad():
        right = model.discriminator(images, labels)
        wrong = model.discriminator(images, (labels + torch.randint(1, 10, labels.shape)) % 10)
    assert (right > wrong).float().mean() > 0.8


# ---- sampling, predict, explore ---------------------------------------------------------------


def test_the_progress_grid_has_a_row_per_class_with_the_same_noise_in_each_column():
    model = conditional_gan(num_fixed_samples=64)
    calls = []
    model.generator.register_forward_hook(lambda module, args, out: calls.append(args))
    samples = model.fixed_samples()
    (z, y), columns = calls[0], model.grid_columns()
    assert columns == 6 and samples.shape == (60, 1, 28, 28)
    assert torch.equal(y, torch.arange(10).repeat_interleave(6))
    assert torch.equal(z, model.fixed_noise[:6].repeat(10, 1))


def test_classes_are_parsed_and_checked():
    assert parse_classes("7", 10) == [7] and parse_classes("1, 4,7", 10) == [1, 4, 7]
    assert parse_classes("all", 3) == [0, 1, 2] and parse_classes(None, 10) is None
    for bad in ("10", "-1", "x", ""):
        with pytest.raises(UserError, match="--classes"):
            parse_classes(bad, 10)
    with pytest.raises(UserError, match="class-conditional"):
        parse_classes("7", 0)


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory) -> Path:
    """A conditional quickstart run: 1 pretraining and 1 adversarial epoch of 4 batches."""
    root = tmp_path_factory.mktemp("conditional")
    cli_main(["fit", *CONDITIONAL, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "4",
              "--trainer.default_root_dir", str(root)])  # fmt: skip
    return root


@pytest.mark.slow
@pytest.mark.parametrize(
    ("classes", "expected"), [("7", [7] * 12), ("1,4", [1, 4] * 6), ("all", list(range(10)) + [0, 1]), (None, None)]
)
def test_predict_draws_the_classes_asked_for(conditional_run, tmp_path, monkeypatch, classes, expected):
    # What the generator was given (the weight average is a copy of it, so this sees it too), not only labels.pt.
    given = []
    forward = ShortGANGenerator.forward

    def record(self, z, y=None):
        given.extend(y.tolist())
        return forward(self, z, y)

    monkeypatch.setattr(ShortGANGenerator, "forward", record)
    out = tmp_path / "samples"
    cli_main(["predict", *CONDITIONAL, "--trainer.default_root_dir", str(conditional_run), "--ckpt_path", "last",
              "--data.num_samples", "12", "--samples_dir", str(out), *(["--classes", classes] if classes else [])])  # fmt: skip
    samples, labels = torch.load(out / "samples.pt"), torch.load(out / "labels.pt")
    if expected is None:  # drawn by the training split's class frequencies (tests/test_variety.py)
        expected = labels.tolist()
        assert all(0 <= c < 10 for c in expected)
    assert given == expected
    assert samples.shape == (12, 1, 28, 28) and labels.tolist() == expected
    assert len(list((out / "images").glob("*.png"))) == 12
    # samples.npz: the PNGs' pixels (N, H, W, C uint8) and the classes, as FID tools and arrays read them.
    arrays = np.load(out / "samples.npz")
    assert arrays["x"].shape == (12, 28, 28, 1) and arrays["x"].dtype == np.uint8 and arrays["y"].tolist() == expected
    first = sorted((out / "images").glob("*.png"))[0]
    assert np.array_equal(np.asarray(Image.open(first).convert("L")), arrays["x"][0, :, :, 0])
    # grid.png: a row per class asked for, 10 cells of 28 px + 2 px padding each.
    assert Image.open(out / "grid.png").size == (10 * 30 + 2, len(set(expected)) * 30 + 2)


@pytest.mark.slow
def test_the_training_grids_have_a_row_per_class(conditional_run):
    run = next((conditional_run / "quickstart").glob("version_*"))
    # 64 fixed samples over 10 classes: 6 columns (cells of 28 px + 2 px padding), 10 rows.
    for name in ("epoch_0001.png", "final.png"):
        assert Image.open(run / "samples" / name).size == (6 * 30 + 2, 10 * 30 + 2), name


@pytest.mark.slow
def test_a_conditional_checkpoint_under_an_unconditional_config_is_one_clear_error(conditional_run, tmp_path, capsys):
    ckpt = next((conditional_run / "quickstart").glob("version_*/checkpoints/last.ckpt"))
    with pytest.raises(SystemExit) as exit_:
        cli_main(["predict", "--config", "configs/quickstart.yaml", "--ckpt_path", str(ckpt),
                  "--samples_dir", str(tmp_path / "out"), "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert exit_.value.code == 2 and "configs/conditional.yaml" in capsys.readouterr().err


@pytest.mark.slow
def test_a_conditional_run_resumes_as_a_straight_one(tmp_path):
    # Constant instance noise: a fading one is keyed to the run's length, and the first half of the
    # split run is a 2-epoch run (its noise reaches 0 sooner), so only the straight run's schedule is its own.
    def run(root: Path, epochs: int, *extra: str) -> dict:
        cli_main(["fit", *CONDITIONAL, "--trainer.limit_train_batches", "3", "--trainer.max_epochs", str(epochs),
                  "--model.init_args.instance_noise_fade", "null", "--trainer.default_root_dir", str(root), *extra])  # fmt: skip
        return torch.load(root / "quickstart" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)

    straight = run(tmp_path / "straight", 3)
    run(tmp_path / "split", 2)
    resumed = run(tmp_path / "split", 3, "--ckpt_path", "last")
    assert "generator.class_bias.weight" in straight["state_dict"]
    for key, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)


def test_classes_outside_predict_or_on_an_unconditional_model_are_one_clear_error(tmp_path, capsys):
    root = ["--trainer.default_root_dir", str(tmp_path), "--samples_dir", str(tmp_path / "out")]
    for args, message in ((["predict", "--config", "configs/quickstart.yaml", "--classes", "7"], "class-conditional"),
                          (["fit", *CONDITIONAL, "--classes", "7"], "--classes is for predict")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            cli_main([*args, *root])
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_explore_holds_the_noise_and_changes_the_class(tmp_path):
    g = ShortGANGenerator(channels=4, num_classes=10).eval()
    calls = []
    g.register_forward_hook(lambda module, args, out: calls.append(args))
    explore(g, "classes", tmp_path, rows=3, classes=[2, 5, 7])
    z, y = calls[0]
    assert torch.equal(y, torch.tensor([2, 5, 7] * 3))
    assert torch.equal(z[0], z[1]) and torch.equal(z[1], z[2]) and not torch.equal(z[0], z[3])  # a row: one z
    calls.clear()
    explore(g, "interpolate", tmp_path, rows=2, steps=4, classes=[3])
    assert torch.equal(calls[0][1], torch.full((8,), 3))  # every interpolation within class 3
    with pytest.raises(UserError, match="class-conditional"):
        explore(ShortGANGenerator(channels=4).eval(), "classes", tmp_path)


# ---- metrics --------------------------------------------------------------------------------------


def test_class_consistency_and_intra_fid_judge_the_requested_classes():
    logits = torch.eye(3)[[0, 1, 2, 2]]
    assert metrics.class_consistency(logits, torch.tensor([0, 1, 2, 0])) == 0.75
    real = torch.randn(60, 4)
    real_labels = torch.arange(60) % 3
    # Samples of the right classes land on their class's features; swapped classes do not.
    fake, fake_labels = real + 0.01 * torch.randn(60, 4), real_labels
    means = torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, 5.0, 0]])
    real, fake = real + means[real_labels], fake + means[fake_labels]
    right = metrics.intra_fid(real, real_labels, fake, fake_labels)
    swapped = metrics.intra_fid(real, real_labels, fake, (fake_labels + 1) % 3)
    assert right < 0.1 < swapped
    # The class mix alone is the same, so the unconditional FID cannot tell the two apart.
    assert metrics.frechet_distance(real, fake) < 0.1


@pytest.mark.slow  # the classifier_checkpoint fixture trains a classifier through the CLI
def test_validation_logs_the_conditional_metrics(classifier_checkpoint):
    images, labels = mnist_sample(100)
    model = conditional_gan(classifier_checkpoint=str(classifier_checkpoint), num_eval_samples=100)
    # G draws a real digit of each requested class, so that the judge's answers vary with the class.
    pool, pool_labels = mnist_sample(5000)  # sorted by class
    examples = torch.stack([pool[pool_labels == c][0] for c in range(10)])
    model.generator.forward = lambda z, y: examples[y]
    drawn = []
    model.generator.register_forward_hook(lambda module, args, out: drawn.append((out.detach(), args[1])))
    val = DataLoader(InMemoryImages(images, labels), batch_size=50, collate_fn=_batch_as_is)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    (result,) = trainer.validate(model, val)
    assert {"val/class_consistency", "val/intra_fid", "val/domain_fid", "val/precision"} <= result.keys()
    # Recomputed here: the share of the fakes the judge puts in the class each was drawn for.
    fakes, asked = torch.cat([out for out, _ in drawn]), torch.cat([y for _, y in drawn])
    assert len(fakes) == 100
    with torch.no_grad():
        agree = (load_classifier(str(classifier_checkpoint))(fakes).argmax(1) == asked).float().mean().item()
    assert agree > 0.5 and result["val/class_consistency"] == pytest.approx(agree, abs=1e-6)
    assert result["val/intra_fid"] > 0


def test_the_overlay_makes_the_dcgan_recipe_conditional_too(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["fit", "--config", "configs/dcgan.yaml", "--config", "configs/conditional.yaml", "--print_config"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "DCGANGenerator" in out and out.count("num_classes: 10") == 2


@pytest.mark.parametrize("dataset", ["mnist", "kmnist", "fashion_mnist"])
def test_the_dataset_configs_are_conditional_and_the_overlay_makes_them_unconditional(dataset, capsys):
    for overlay, classes, by_class in (([], 10, "true"), (["--config", "configs/unconditional.yaml"], 0, "false")):
        with pytest.raises(SystemExit) as exit_:
            cli_main(["fit", "--config", f"configs/{dataset}.yaml", *overlay, "--print_config"])
        out = capsys.readouterr().out
        assert exit_.value.code == 0 and out.count(f"num_classes: {classes}") == 2
        assert f"minibatch_std_by_class: {by_class}" in out


@pytest.mark.parametrize("family", ["shortgan", "dcgan"])
def test_a_checkpoint_is_checked_for_conditioning_before_its_weights_load(family):
    conditional = {"state_dict": conditional_gan(family).state_dict()}
    conditional_gan(family).on_load_checkpoint(conditional)  # the same kind: accepted
    plain = GAN(DCGANGenerator(channels=8), DCGANDiscriminator(channels=8), classifier_checkpoint=None)
    if family == "shortgan":
        plain = GAN(ShortGANGenerator(channels=4), ShortGANDiscriminator(channels=8), classifier_checkpoint=None)
    with pytest.raises(UserError, match="configs/conditional.yaml"):
        plain.on_load_checkpoint(conditional)
    with pytest.raises(UserError, match="drop configs/conditional.yaml"):
        conditional_gan(family).on_load_checkpoint({"state_dict": plain.state_dict()})


@pytest.mark.parametrize("compile", ["off", "iteration"])
@pytest.mark.parametrize(("batch", "paired"), [(8, [1, 2, 3, 4, 1, 2, 3, 4]), (7, [1, 2, 3, 1, 2, 3, 7])])
def test_mode_seeking_pairs_fakes_of_one_class(compile, batch, paired):
    model = attached(conditional_gan(g_steps=1, mode_seeking=1.0, compile=compile, compile_backend=None))
    seen = []
    model.generator.register_forward_hook(lambda module, args, out: seen.append(args[1].clone()))
    labels = torch.arange(1, batch + 1)
    model.adversarial_step(random_images(batch), 0, labels)
    d_step, g_step = seen
    assert torch.equal(d_step, labels)  # D's fakes: the real batch's classes
    # Fake i and fake i + batch//2 share a class; an odd batch's last fake keeps its own.
    assert torch.equal(g_step, torch.tensor(paired))


def test_mode_seeking_moves_g_s_step_towards_distinct_fakes():
    # From the same weights, optimizer states and random numbers, the term changes G's step, and in
    # its direction: the step's own noise then gives fakes further apart (a lower mode-seeking loss)
    # than the step without it gave — a sign flip would bring them closer.
    after = {}
    for weight in (0.0, 10.0):
        torch.manual_seed(0)
        model = attached(conditional_gan(g_steps=1, mode_seeking=weight))
        calls = []
        hook = model.generator.register_forward_hook(lambda module, args, out: calls.append(args))
        torch.manual_seed(1)
        model.adversarial_step(random_images(8), 0, torch.tensor([1, 2, 3, 4, 1, 2, 3, 4]))
        hook.remove()
        z, y = calls[-1]  # the G step's noise and classes
        with torch.no_grad():
            after[weight] = losses.mode_seeking(model.generator(z, y), z).item()
    assert after[10.0] < after[0.0]


def test_mode_seeking_with_a_batch_of_one_is_one_clear_error():
    model = attached(conditional_gan(g_steps=1, mode_seeking=1.0))
    with pytest.raises(UserError, match="mode_seeking pairs the fakes of a batch, so it needs batches of at least 2"):
        model.adversarial_step(random_images(1), 0, torch.zeros(1, dtype=torch.long))
