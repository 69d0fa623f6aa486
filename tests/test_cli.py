"""End-to-end runs through the CLI on the offline MNIST sample."""

import glob
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
import yaml
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from shortgan.checkpoints import load_generator_weights
from shortgan.cli import cli_main
from shortgan.gan import GAN

# No weight average: after a dozen steps an average of G is still near its initial weights, and these
# tests check samples from G itself (test_gan.py tests the average). No domain metrics: they are not
# the point here (tests/test_classifier.py checks them), and their classifier would be cached in data/.
QUICK = ["--config", "configs/quickstart.yaml", "--trainer.limit_train_batches", "6", "--trainer.log_every_n_steps", "1",
         "--trainer.enable_progress_bar", "false", "--model.init_args.ema_decay", "null",
         "--model.init_args.classifier_checkpoint", "null"]  # fmt: skip


def fit(root: Path, *extra: str) -> None:
    cli_main(["fit", *QUICK, "--trainer.default_root_dir", str(root), *extra])


def scalars(run: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def adam_step_counts(ckpt: dict) -> list[int]:
    return [int(next(iter(opt["state"].values()))["step"]) if opt["state"] else 0 for opt in ckpt["optimizer_states"]]


def test_every_config_parses(capsys):
    for config in sorted(glob.glob("configs/*.yaml")):
        # An overlay such as debug.yaml or conditional.yaml names no classes: compose it with the quickstart.
        base = [] if "class_path" in Path(config).read_text() else ["--config", "configs/quickstart.yaml"]
        with pytest.raises(SystemExit) as exit_:
            cli_main(["fit", *base, "--config", config, "--print_config"])
        assert exit_.value.code == 0, config
        assert "class_path" in capsys.readouterr().out, config
        text = Path(config).read_text()
        assert text.startswith("# ") and "python main.py " in text, f"{config}: start with a comment and the command"


def test_help_shows_the_docstrings(capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "--model.help", "shortgan.GAN"])
    out = " ".join(capsys.readouterr().out.split())
    assert "G updates per G turn" in out and "one-sided label smoothing" in out


@pytest.mark.slow
def test_fit_then_resume_then_predict(tmp_path):
    fit(tmp_path, "--trainer.max_epochs", "2", "--model.init_args.pretrain_epochs", "1")
    run = tmp_path / "quickstart" / "version_0"
    ckpt_path = run / "checkpoints" / "last.ckpt"
    first = torch.load(ckpt_path, weights_only=True)
    # 6 pretraining steps, then 6 batches × (1 D step + 2 G steps); once pretraining is over its
    # optimizer's state is not saved (it never steps again).
    assert adam_step_counts(first) == [12, 6, 0]

    acc = scalars(run)
    tags = acc.Tags()["scalars"]
    for tag in ("train/d_loss", "train/g_loss", "train/pretrain_loss", "train/d_real", "train/d_fake"):
        assert tag in tags, tag
    assert {"lr/generator", "lr/discriminator", "lr/pretrain"} <= set(tags)
    assert [e.step for e in acc.Images("samples/fixed_noise")] == [0, 1]
    for name in ("epoch_0000.png", "epoch_0001.png", "final.png", "timeline.png"):
        assert (run / "samples" / name).stat().st_size > 1000, name
    assert (run / "config.yaml").exists() and (run / "hparams.yaml").exists()

    # Resume the latest run of this config: same folder, next epoch, optimizer states carried on.
    fit(tmp_path, "--trainer.max_epochs", "3", "--model.init_args.pretrain_epochs", "1", "--ckpt_path", "last")
    assert sorted(p.name for p in (tmp_path / "quickstart").iterdir()) == ["version_0"]
    second = torch.load(ckpt_path, weights_only=True)
    assert second["epoch"] == first["epoch"] + 1
    assert adam_step_counts(second) == [24, 12, 0]
    assert torch.equal(second["state_dict"]["fixed_noise"], first["state_dict"]["fixed_noise"])
    assert (run / "samples" / "epoch_0002.png").exists()
    steps = [e.step for e in scalars(run).Scalars("train/d_loss")]
    # Curves continue: TensorBoard's x-axis counts batches (3 epochs × 6), not restarting at 0.
    assert steps == sorted(steps) and steps[-1] == 17

    out = tmp_path / "samples"
    cli_main(["predict", "--config", "configs/quickstart.yaml", "--ckpt_path", str(ckpt_path),
              "--model.init_args.ema_decay", "null", "--data.num_samples", "10", "--samples_dir", str(out), "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    samples = torch.load(out / "samples.pt", weights_only=True)
    assert samples.shape == (10, 1, 28, 28) and samples.dtype == torch.float32
    assert samples.min() >= -1 and samples.max() <= 1 and samples.std() > 0.1
    assert (out / "grid.png").exists() and len(list((out / "images").glob("*.png"))) == 10


@pytest.mark.slow
def test_standalone_pretraining_feeds_the_gan(tmp_path, monkeypatch):
    cli_main(["fit", "--config", "configs/pretrain_quickstart.yaml", "--trainer.max_epochs", "1",
              "--trainer.limit_train_batches", "4", "--trainer.default_root_dir", str(tmp_path),
              "--trainer.enable_progress_bar", "false"])  # fmt: skip
    pre = tmp_path / "pretrain_quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    pretrained = load_generator_weights(str(pre))
    at_start = []
    on_train_start = GAN.on_train_start

    def record(self: GAN) -> None:
        at_start.append({k: v.clone() for k, v in self.generator.state_dict().items()})
        on_train_start(self)

    monkeypatch.setattr(GAN, "on_train_start", record)
    fit(tmp_path, "--trainer.max_epochs", "1", "--model.init_args.pretrain_epochs", "0",
        "--model.init_args.pretrained_generator", str(pre))  # fmt: skip
    # The GAN's first adversarial step starts from the pretrained generator, then trains it on.
    assert at_start[0].keys() == pretrained.keys()
    assert all(torch.equal(at_start[0][k], v) for k, v in pretrained.items())
    gan = torch.load(tmp_path / "quickstart" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert adam_step_counts(gan) == [12, 6, 0]


@pytest.mark.slow
def test_checkpointing_can_be_turned_off(tmp_path):
    # The CLI always builds its two ModelCheckpoints; Lightning refuses them when checkpointing is off.
    fit(tmp_path, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--model.init_args.pretrain_epochs", "0",
        "--trainer.enable_checkpointing", "false")  # fmt: skip
    run = tmp_path / "quickstart" / "version_0"
    assert (run / "samples" / "final.png").exists()
    assert not (run / "checkpoints").exists()


def run_main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_user_errors_end_in_one_line_without_traceback(tmp_path):
    missing = run_main("fit", *QUICK, "--data.dataset", "mnist", "--data.data_dir", str(tmp_path),
                       "--data.download", "false", "--trainer.default_root_dir", str(tmp_path))  # fmt: skip
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
    assert f"{tmp_path}/MNIST/raw/" in missing.stderr and "t10k-labels-idx1-ubyte.gz" in missing.stderr

    no_run = run_main("fit", *QUICK, "--ckpt_path", "last", "--trainer.default_root_dir", str(tmp_path))
    assert no_run.returncode == 2 and "no run of 'quickstart'" in no_run.stderr and "Traceback" not in no_run.stderr

    bad_knob = run_main("fit", *QUICK, "--model.init_args.g_steps", "0", "--trainer.default_root_dir", str(tmp_path))
    assert bad_knob.returncode == 2 and bad_knob.stderr.strip().endswith("error: model.g_steps must be at least 1, got 0")

    wrong = tmp_path / "classifier.ckpt"
    torch.save({"state_dict": {"network.weight": torch.zeros(1)}, "epoch": 0, "global_step": 0,
                "pytorch-lightning_version": "2.6.6"}, wrong)  # fmt: skip
    other_model = run_main("predict", "--config", "configs/quickstart.yaml", "--ckpt_path", str(wrong),
                           "--trainer.default_root_dir", str(tmp_path))  # fmt: skip
    assert other_model.returncode == 2 and "was not written by a GAN" in other_model.stderr


def test_an_unwritable_output_folder_ends_in_one_line(tmp_path, monkeypatch, capsys):
    # A file where a folder should be: no process, root included, can create folders under it.
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_:
        cli_main(["fit", *QUICK, "--trainer.default_root_dir", str(blocker / "runs")])
    assert exit_.value.code == 2
    assert f"Cannot write into {blocker}/runs/quickstart" in capsys.readouterr().err

    # A folder without write permission (simulated: tests often run as root, which ignores modes).
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    fit = ["fit", *QUICK, "--trainer.default_root_dir", str(tmp_path / "runs")]
    predict = ["predict", "--config", "configs/quickstart.yaml", "--samples_dir", str(tmp_path / "out")]
    for args, flag in ((fit, "--trainer.default_root_dir"), (predict, "--samples_dir")):
        with pytest.raises(SystemExit) as exit_:
            cli_main(args)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "(Permission denied)" in err and flag in err
    assert not (tmp_path / "runs" / "quickstart").exists() or not any((tmp_path / "runs" / "quickstart").iterdir())



@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A runs root with one tiny quickstart run trained with g_steps 3 and real_label 0.8 (the config says 2, 0.9)."""
    root = tmp_path_factory.mktemp("runs")
    fit(root, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
        "--model.init_args.pretrain_epochs", "0", "--model.init_args.g_steps", "3",
        "--model.init_args.real_label", "0.8")  # fmt: skip
    return root


@pytest.mark.slow
@pytest.mark.parametrize("ckpt", ["file", "last"])
def test_the_command_line_and_config_win_over_the_checkpoints_hyperparameters(trained_run, ckpt):
    path = str(trained_run / "quickstart" / "version_0" / "checkpoints" / "last.ckpt") if ckpt == "file" else "last"
    cli = cli_main(["validate", *QUICK, "--ckpt_path", path, "--model.init_args.g_steps", "1",
                    "--trainer.limit_val_batches", "1", "--trainer.default_root_dir", str(trained_run)])  # fmt: skip
    assert cli.model.hparams.g_steps == 1  # the command line, not the checkpoint's 3
    assert cli.model.hparams.real_label == 0.9  # configs/quickstart.yaml, not the checkpoint's 0.8


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["first_half", "random_bytes"])
@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_a_damaged_checkpoint_ends_in_one_line(trained_run, tmp_path, capsys, subcommand, damage):
    good = (trained_run / "quickstart" / "version_0" / "checkpoints" / "last.ckpt").read_bytes()
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(good[: len(good) // 2] if damage == "first_half" else torch.randn(1000).numpy().tobytes())
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_:
        cli_main([subcommand, *QUICK, "--ckpt_path", str(damaged), "--trainer.default_root_dir", str(root)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: --ckpt_path: {damaged} is not a readable checkpoint")
    assert not root.exists() and not (tmp_path / "predictions").exists()  # refused before writing anything


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_accelerator_without_a_gpu_says_what_to_pass_instead(tmp_path, capsys, accelerator):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["fit", *QUICK, "--trainer.accelerator", accelerator, "--trainer.default_root_dir", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: --trainer.accelerator {accelerator}: ") and "--trainer.accelerator cpu" in err


@pytest.mark.slow
def test_fast_dev_run_runs_a_batch_of_each_loop(tmp_path):
    # Lightning's dummy logger under fast_dev_run has no folder and answers any attribute.
    cli = cli_main(["fit", "--config", "configs/quickstart.yaml", "--trainer.fast_dev_run", "true",
                    "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
                    "--data.init_args.data_dir", str(tmp_path / "data")])  # fmt: skip
    assert cli.trainer.fit_loop.epoch_loop.batch_progress.total.completed == 1


def test_the_quickstart_model_is_the_recipe_unconditional_with_ten_pretraining_epochs_and_a_narrower_d():
    recipe = yaml.safe_load(Path("configs/recipes/shortgan.yaml").read_text())
    quickstart = yaml.safe_load(Path("configs/quickstart.yaml").read_text())["model"]
    assert quickstart["init_args"].pop("pretrain_epochs") == 10 and recipe["init_args"].pop("pretrain_epochs") == 1
    # The dataset recipe's D is twice as wide (issue 26, measured on the labelled datasets); the
    # quickstart keeps the narrower, faster D it was measured with.
    q_d, r_d = (m["init_args"]["discriminator"]["init_args"] for m in (quickstart, recipe))
    assert q_d.pop("channels") == 16 and r_d.pop("channels") == 32
    # The dataset recipe is class-conditional; configs/unconditional.yaml takes exactly that back.
    unconditional = yaml.safe_load(Path("configs/unconditional.yaml").read_text())["model"]["init_args"]
    for network in ("generator", "discriminator"):
        for key, value in unconditional[network]["init_args"].items():
            assert recipe["init_args"][network]["init_args"].pop(key) != value
    assert quickstart == recipe


@pytest.mark.slow
def test_a_fresh_fit_neither_warns_about_ckpt_path_nor_resumes_by_itself(tmp_path):
    # Lightning resumes a fit without ckpt_path from the newest checkpoint it finds, with a warning,
    # when the Trainer has an OnExceptionCheckpoint; the interrupt checkpoint must not make it do that.
    # Without a logger, two runs share <default_root_dir>/checkpoints/: the second finds the first's last.ckpt.
    args = ["fit", "--config", "configs/quickstart.yaml", "--config", "configs/debug.yaml",
            "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path), "--data.init_args.data_dir", str(tmp_path / "data")]  # fmt: skip
    for run in ("first", "second"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cli = cli_main(args)
        assert [str(w.message) for w in caught if "ckpt_path" in str(w.message)] == [], run
        assert cli.trainer.ckpt_path is None, run  # started afresh, not from the first run's last.ckpt
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
