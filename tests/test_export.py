"""Issue 28, "take the generator away": `python -m shortgan.export` writes a run's generator into one
small file that rebuilds it without Lightning and draws what `predict` draws."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shortgan.checkpoints import read_checkpoint
from shortgan.cli import build_cli, cli_main
from shortgan.export import load_generator, main

# End to end through the CLI on the offline MNIST sample.
pytestmark = pytest.mark.slow

RUN = ["--config", "configs/quickstart.yaml", "--config", "configs/conditional.yaml",
       "--trainer.enable_progress_bar", "false", "--model.init_args.classifier_checkpoint", "null"]  # fmt: skip


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A conditional quickstart run (weight average on, as the recipe has it): 1 pretraining + 1 adversarial epoch."""
    root = tmp_path_factory.mktemp("runs")
    cli_main(["fit", *RUN, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3",
              "--model.init_args.pretrain_epochs", "1", "--trainer.default_root_dir", str(root)])  # fmt: skip
    return root / "quickstart" / "version_0"


def test_the_exported_generator_draws_predict_s_samples_bit_for_bit_without_lightning(run_folder, tmp_path):
    checkpoint = run_folder / "checkpoints" / "last.ckpt"
    out = tmp_path / "generator.pt"
    main([str(checkpoint), str(out)])
    assert out.stat().st_size < checkpoint.stat().st_size / 3  # G alone: no D, no optimizer states, no second copy

    # What predict returns for these classes and this noise: the run's model with the checkpoint's weights.
    cli = build_cli([*RUN, "--trainer.default_root_dir", str(tmp_path)], run=False)
    cli.model.load_state_dict(read_checkpoint(str(checkpoint), "test")["state_dict"])
    classes = torch.tensor([0, 3, 7, 9] * 4)
    expected = cli.model.draw(len(classes), classes, torch.Generator().manual_seed(1))
    assert cli.model.generator_ema is not None  # the recipe samples from the weight average: so must the export

    # Loaded in a fresh process that never imports Lightning.
    code = (
        "import sys, torch\n"
        "from shortgan.export import load_generator\n"
        f"g = load_generator({str(out)!r})\n"
        "z = torch.randn(16, g.latent_dim, generator=torch.Generator().manual_seed(1))\n"
        f"torch.save(g(z, torch.tensor([0, 3, 7, 9] * 4)), {str(tmp_path / 'samples.pt')!r})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path.cwd())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert torch.equal(torch.load(tmp_path / "samples.pt"), expected)
    # In this process too, on the same noise.
    g = load_generator(str(out))
    with torch.no_grad():
        z = torch.randn(16, g.latent_dim, generator=torch.Generator().manual_seed(1))
        assert torch.equal(g(z, classes), expected)


def test_a_checkpoint_of_another_model_or_a_missing_config_is_one_line(run_folder, tmp_path, capsys, classifier_checkpoint):
    for args, message in (
        ([str(classifier_checkpoint), str(tmp_path / "g.pt")], "not written by a GAN"),
        ([str(run_folder / "checkpoints" / "last.ckpt"), str(tmp_path / "g.pt"), "--config", str(tmp_path / "none.yaml")],
         "No config.yaml at"),
        ([str(tmp_path / "missing.ckpt"), str(tmp_path / "g.pt")], "no file at"),
    ):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main(args)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g.pt").exists()
