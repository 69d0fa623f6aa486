"""Issue 26: the options measured for variety (R1 in D's loss, class-conditional BatchNorm in G, label
dropout), the class mix every sample is drawn with, and `shortgan.compare`'s real-vs-real value at the
same sizes."""

import importlib.util
import json

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from shortgan import losses
from shortgan.compare import main, real_reference, score_model, scored
from shortgan.judge import load_classifier
from shortgan.data import InMemoryImages, _batch_as_is
from shortgan.errors import UserError
from shortgan.gan import GAN
from shortgan.networks import ShortGANDiscriminator, ShortGANGenerator
from shortgan.networks.dcgan import DCGANDiscriminator, DCGANGenerator
from shortgan.networks.conditioning import NO_CLASS, ClassBatchNorm2d
from shortgan.networks.shortgan import MinibatchStdDev
from test_compare import digit_classifier  # noqa: F401 (a fixture)
from test_gan import fit, small_gan

REAL = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1


# ---- R1 ------------------------------------------------------------------------------------------


def test_r1_is_half_the_squared_norm_of_d_s_input_gradient():
    w = torch.randn(1, 1, 4, 4)
    critic = lambda x: (x * w).flatten(1).sum(1)  # ∇ₓ = w for every image
    assert losses.r1_penalty(critic, torch.randn(5, 1, 4, 4)).item() == pytest.approx(0.5 * w.square().sum().item())
    quadratic = lambda x: x.square().flatten(1).sum(1)  # ∇ₓ = 2x: the penalty is measured where it is asked
    x = torch.randn(3, 1, 4, 4)
    assert losses.r1_penalty(quadratic, x).item() == pytest.approx(2 * x.square().flatten(1).sum(1).mean().item())


@pytest.mark.parametrize("compile", ["off", "iteration"])
def test_r1_gamma_adds_gamma_times_the_penalty_on_real_images_to_d_s_loss(compile, monkeypatch):
    seen = []

    def penalty(critic, real, gradient):
        seen.append(real.detach().clone())
        return critic(real).sum() * 0 + 0.75  # in D's graph, a known value

    monkeypatch.setattr(losses, "r1_penalty", penalty)
    d_losses = {}
    for gamma in (0.0, 2.0):
        L.seed_everything(0)
        model = small_gan(r1_gamma=gamma, g_steps=1, instance_noise=0.0, compile=compile, compile_backend=None)
        fit(model, REAL)
        d_losses[gamma] = float(model.latest["d_loss"])
    assert d_losses[2.0] - d_losses[0.0] == pytest.approx(2.0 * 0.75, abs=1e-5)
    assert len(seen) == 1 and torch.equal(seen[0], REAL)  # the real batch (no noise here), once per D step


def test_r1_is_refused_below_zero():
    with pytest.raises(UserError, match="r1_gamma must be >= 0"):
        small_gan(r1_gamma=-1.0)


# ---- class-conditional BatchNorm -------------------------------------------------------------------


def test_class_batchnorm_scales_and_shifts_each_class_by_its_own_parameters():
    norm = ClassBatchNorm2d(3, num_classes=4).eval()
    h, y = torch.randn(8, 3, 5, 5), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    plain = norm(h, y)
    assert torch.allclose(plain, F.batch_norm(h, torch.zeros(3), torch.ones(3), training=False))  # starts as BN
    with torch.no_grad():
        norm.class_scale.weight[2] = 3.0
        norm.class_shift.weight[2] = -1.0
    moved = norm(h, y)
    mine = y == 2
    assert torch.allclose(moved[mine], 3.0 * plain[mine] - 1.0)
    assert torch.equal(moved[~mine], plain[~mine])


def test_a_generator_with_class_batchnorm_draws_each_class_through_its_own_norms():
    g = ShortGANGenerator(channels=4, num_classes=10, class_batchnorm=True).eval()
    norms = [m for m in g.modules() if isinstance(m, ClassBatchNorm2d)]
    assert len(norms) == 3 and not any(isinstance(m, torch.nn.BatchNorm2d) and m.affine for m in g.modules())
    z, y = torch.randn(4, g.latent_dim), torch.tensor([1, 5, 5, 7])
    before = g(z, y)
    with torch.no_grad():
        for m in norms:
            m.class_shift.weight[5] += 0.5
    after = g(z, y)
    assert not torch.allclose(before[1:3], after[1:3]) and torch.equal(before[[0, 3]], after[[0, 3]])
    with pytest.raises(ValueError, match="class_batchnorm needs a conditional generator"):
        ShortGANGenerator(class_batchnorm=True)


# ---- label dropout ---------------------------------------------------------------------------------


def test_a_generator_given_no_class_draws_as_it_would_without_its_class_parameters():
    g = ShortGANGenerator(channels=4, num_classes=10, class_batchnorm=True).eval()
    with torch.no_grad():  # every class parameter away from its start, so "no class" is not a class's value
        for name, p in g.named_parameters():
            if "class_" in name:
                p.normal_()
    plain = ShortGANGenerator(channels=4, num_classes=10, class_batchnorm=True).eval()
    plain.load_state_dict(g.state_dict())
    with torch.no_grad():  # what "no class" must be: no class vector, BatchNorm's scale 1 and shift 0
        plain.class_bias.weight.zero_()
        for m in plain.modules():
            if isinstance(m, ClassBatchNorm2d):
                m.class_scale.weight.fill_(1.0)
                m.class_shift.weight.zero_()
    z = torch.randn(6, g.latent_dim)
    y = torch.tensor([NO_CLASS, 3, NO_CLASS, 7, 7, NO_CLASS])
    drawn = g(z, y)
    assert torch.allclose(drawn[y == NO_CLASS], plain(z, torch.tensor([0, 3, 9, 7, 7, 1]))[y == NO_CLASS], atol=1e-6)
    assert torch.equal(drawn[y != NO_CLASS], g(z, y.clamp(min=0))[y != NO_CLASS])  # the others keep their class
    assert not torch.allclose(drawn[y == NO_CLASS], g(z, torch.zeros(6, dtype=torch.long))[y == NO_CLASS])


def test_a_discriminator_given_no_class_judges_without_the_projection():
    d = ShortGANDiscriminator(channels=8, num_layers=3, num_classes=10, spectral_norm=False)
    torch.nn.init.normal_(d.class_embedding.weight)
    x = torch.randn(4, 1, 28, 28)
    unconditional = d.to_logit(d.features(x).flatten(1)).squeeze(1)
    assert torch.allclose(d(x, torch.full((4,), NO_CLASS)), unconditional, atol=1e-6)
    assert not torch.allclose(d(x, torch.zeros(4, dtype=torch.long)), unconditional, atol=1e-3)


def test_the_dcgan_networks_given_no_class_leave_their_class_parameters_out():
    g, d = DCGANGenerator(channels=8, num_classes=10).eval(), DCGANDiscriminator(channels=8, num_classes=10).eval()
    torch.nn.init.normal_(g.class_map.weight)
    z, none = torch.randn(3, g.latent_dim), torch.full((3,), NO_CLASS)
    x = g(z, none)
    with torch.no_grad():
        expected = g.net[1:](g.net[0](z[:, :, None, None]))  # G's layers without the class map
        assert torch.allclose(x, expected, atol=1e-6)
        torch.nn.init.normal_(d.class_embedding.weight)
        image = torch.randn(3, 1, 28, 28)
        unconditional = d.net(image).flatten()
        assert torch.allclose(d(image, none), unconditional, atol=1e-6)  # D without the projection
        assert not torch.allclose(d(image, torch.zeros(3, dtype=torch.long)), unconditional, atol=1e-3)


def test_the_per_class_spread_puts_the_images_without_a_class_in_a_group_of_their_own():
    h, y = torch.randn(6, 2, 3, 3), torch.tensor([NO_CLASS, 0, NO_CLASS, 0, 1, NO_CLASS])
    spread = MinibatchStdDev(num_classes=2)(h, y)[:, -1, 0, 0]
    whole = lambda images: MinibatchStdDev()(images)[0, -1, 0, 0]  # the spread over the images given
    for group in (NO_CLASS, 0):
        assert torch.allclose(spread[y == group], whole(h[y == group]).expand(int((y == group).sum())), atol=1e-6)


def labels_seen(label_dropout: float, compile: str = "off") -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """The labels D and G were called with in one adversarial iteration of a conditional GAN on 64
    images, and the batch's own labels."""
    model = conditional_gan(label_dropout=label_dropout, g_steps=1, compile=compile, compile_backend=None)
    seen_by_d, seen_by_g = [], []
    model.discriminator.register_forward_hook(lambda m, args, out: seen_by_d.append(args[1].clone()))
    model.generator.register_forward_hook(lambda m, args, out: seen_by_g.append(args[1].clone()))
    images, labels = torch.rand(64, 1, 28, 28) * 2 - 1, torch.arange(64) % 10
    loader = DataLoader(InMemoryImages(images, labels), batch_size=64, collate_fn=_batch_as_is)
    L.seed_everything(0)
    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(model, loader)  # fmt: skip
    return seen_by_d, seen_by_g, labels


@pytest.mark.parametrize("compile", ["off", "iteration"])
def test_label_dropout_trains_a_share_of_the_batch_without_its_class(compile):
    seen_by_d, seen_by_g, labels = labels_seen(0.5, compile)
    dropped = seen_by_d[0] == NO_CLASS
    assert 0.3 < dropped.float().mean() < 0.7  # 64 images, p = 0.5
    assert torch.equal(seen_by_d[0][~dropped], labels[~dropped])  # the others keep their class
    # D's real and fake calls, and G's (for D's fakes and its own step), all with the same labels:
    # the fake drawn for a real image without its class is drawn without a class too.
    assert len(seen_by_d) >= 3 and len(seen_by_g) >= 2
    assert all(torch.equal(y, seen_by_d[0]) for y in seen_by_d + seen_by_g)
    seen_by_d, seen_by_g, labels = labels_seen(0.0, compile)
    assert all(torch.equal(y, labels) for y in seen_by_d + seen_by_g)  # off: every image keeps its class


def test_label_dropout_needs_classes_and_a_share_below_one():
    with pytest.raises(UserError, match="label_dropout .* needs class-conditional networks"):
        small_gan(label_dropout=0.2)
    with pytest.raises(UserError, match=r"label_dropout must be in \[0, 1\)"):
        conditional_gan(label_dropout=1.0)


# ---- the class mix of every draw ---------------------------------------------------------------------


def conditional_gan(**kwargs) -> GAN:
    kwargs = {"pretrain_epochs": 0, "classifier_checkpoint": None, **kwargs}
    return GAN(ShortGANGenerator(channels=4, num_classes=10), ShortGANDiscriminator(channels=8, num_classes=10), **kwargs)


def skewed_run() -> GAN:
    """A conditional GAN after one batch of data in which class 3 is 3/4 of the images and class 8 the rest."""
    labels = torch.tensor([3] * 12 + [8] * 4)
    model = conditional_gan()
    loader = DataLoader(InMemoryImages(REAL, labels), batch_size=16, collate_fn=_batch_as_is)
    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(model, loader)  # fmt: skip
    return model


def test_a_conditional_model_keeps_the_training_data_s_class_frequencies_and_draws_by_them():
    model = skewed_run()
    expected = torch.zeros(10)
    expected[3], expected[8] = 0.75, 0.25
    assert torch.allclose(model.class_frequencies, expected)
    assert "class_frequencies" in model.state_dict()  # so predict after a checkpoint draws the same mix
    drawn = model.draw_classes(4000, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {3, 8} and abs((drawn == 3).float().mean().item() - 0.75) < 0.03
    # predict without --classes draws by them; with --classes it takes the classes given, in turn.
    _, labels = model.predict_step(torch.arange(400), 0)
    assert set(labels.tolist()) == {3, 8} and abs((labels == 3).float().mean().item() - 0.75) < 0.08
    model.predict_classes = [0, 1]
    assert model.predict_step(torch.arange(4), 0)[1].tolist() == [0, 1, 0, 1]


def test_validation_asks_for_classes_by_the_training_frequencies_not_the_test_split_s():
    model = skewed_run()
    model.predict_classes = None
    requested = []
    model.draw = lambda n, y, generator: (requested.append(y.clone()), torch.zeros(n, 1, 28, 28))[1]
    model._evaluate, model._eval_left = True, 16
    model._eval_rng = torch.Generator().manual_seed(0)
    updates = []
    model.quality.update = lambda real, fake, real_labels=None, fake_labels=None: updates.append((real_labels, fake_labels))
    test_labels = torch.arange(16) % 10  # every class: what validation judged the fakes by before
    model._evaluation_step((REAL, test_labels))
    (real_labels, fake_labels), (asked,) = updates[0], requested
    assert torch.equal(real_labels, test_labels) and torch.equal(fake_labels, asked)
    assert set(asked.tolist()) <= {3, 8}


def test_a_checkpoint_without_class_frequencies_loads_with_every_class_equally_likely():
    model = conditional_gan()
    checkpoint = {"state_dict": {k: v for k, v in model.state_dict().items() if k != "class_frequencies"}}
    model.on_load_checkpoint({**checkpoint, "adversarial_started_at": None})
    assert torch.allclose(checkpoint["state_dict"]["class_frequencies"], torch.full((10,), 0.1))


def test_data_with_more_classes_than_the_networks_is_one_clear_error():
    model = conditional_gan()
    loader = DataLoader(InMemoryImages(REAL, torch.arange(16)), batch_size=16, collate_fn=_batch_as_is)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    with pytest.raises(UserError, match="classes up to 15 but the networks' num_classes is 10"):
        trainer.fit(model, loader)


# ---- the instrument ---------------------------------------------------------------------------------


def test_scored_adds_the_chunk_mean_and_spread_at_the_real_vs_real_size():
    generator = torch.Generator().manual_seed(0)
    real = (torch.randn(300, 4, generator=generator), torch.randn(300, 10, generator=generator))
    fake = (torch.randn(400, 4, generator=generator) + torch.arange(400).unsqueeze(1) / 400, torch.randn(400, 10))
    row = scored(fake, real, None, None, 100)
    chunks = [scored((fake[0][i : i + 100], fake[1][i : i + 100]), real, None, None, 100) for i in (0, 100, 200, 300)]
    same = row["same_size"]
    assert same["size"] == 100 and same["chunks"] == 4
    for key in ("fid", "precision", "recall"):
        values = torch.tensor([c[key] for c in chunks])
        assert same[key] == pytest.approx(values.mean().item()) and same[f"{key}_sd"] == pytest.approx(values.std().item())
    # The chunks' FID is not the whole set's: FID of fewer samples is biased upwards.
    assert same["fid"] > row["fid"]
    assert "same_size" not in scored(fake, real, None, None, 400)


@pytest.mark.slow
def test_compare_reports_the_real_vs_real_value_beside_the_samples(digit_classifier, tmp_path):  # noqa: F811
    main(["--configs", "configs/mlp_gan.yaml", "--seconds", "1", "--points", "1", "--num_samples", "1500",
          "--reference", "train", "--classifier", str(digit_classifier), "--out", str(tmp_path),
          "--accelerator", "cpu"])  # fmt: skip
    results = json.loads((tmp_path / "results.json").read_text())
    reference = results["__reference__"]
    # The MNIST sample: 4,000 training digits judged against, the 1,000 test digits as the real side.
    assert (reference["reference"], reference["reference_size"], reference["size"]) == ("train", 4000, 1000)
    assert reference["real_vs_real"]["fid"] < 20 and reference["real_vs_real"]["recall"] > 0.5
    last = results["mlp_gan"]["rows"][-1]
    assert last["same_size"]["size"] == 1000 and last["same_size"]["chunks"] == 1
    table = (tmp_path / "comparison.md").read_text()
    assert "Reference: 4000 real images (train split); 1500 samples" in table
    assert f"| real vs real | {reference['real_vs_real']['fid']:.2f} |" in table


@pytest.mark.slow
def test_compare_full_length_trains_each_config_for_its_own_epochs(digit_classifier, tmp_path):  # noqa: F811
    short = tmp_path / "short.yaml"
    short.write_text("trainer: {max_epochs: 4, limit_train_batches: 3}\n")
    main(["--configs", f"configs/mlp_gan.yaml+{short}", "--full_length", "true", "--points", "2",
          "--num_samples", "100", "--classifier", str(digit_classifier), "--out", str(tmp_path / "out"),
          "--accelerator", "cpu"])  # fmt: skip
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["mlp_gan+short"]["rows"]
    # At 0, after epoch 2 of 4 and at the end: the run's own 4 epochs of 3 batches, no time budget.
    assert [(r["epoch"], r["batches"]) for r in rows] == [(0, 0), (1, 6), (3, 12)]
    # experiments/score_checkpoints.py scores the run's last checkpoint as compare scored its end.
    spec = importlib.util.spec_from_file_location("score_checkpoints", "experiments/score_checkpoints.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    run = tmp_path / "out" / "runs" / "mlp_gan+short" / "version_0"
    classifier = load_classifier(str(digit_classifier), "--classifier")
    ref, real, _ = real_reference(classifier, "mnist_sample", "data", "test", 100)
    state = script.read(run / "checkpoints" / "last.ckpt")
    again = score_model(script.load_model(run, state), classifier, real, ref.labels, 100)
    for key in ("fid", "precision", "recall"):
        assert again[key] == pytest.approx(rows[-1][key], rel=1e-5), key
    assert script.epochs_trained(state) == 4
