"""pyproject.toml: the `shortgan` command and the dependencies that `pip install .` installs."""

import importlib
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PROJECT = tomllib.loads(Path("pyproject.toml").read_text())["project"]


def test_requirements_txt_pins_the_declared_dependencies():
    lines = [line.split("#")[0].strip() for line in Path("requirements.txt").read_text().splitlines()]
    assert sorted(filter(None, lines)) == sorted(PROJECT["dependencies"])
    assert all(re.fullmatch(r"[\w.\-\[\]]+==[\w.]+", d) for d in PROJECT["dependencies"]), "pin every dependency"


@pytest.mark.slow
def test_the_shortgan_command_runs_the_cli_and_exits_0(tmp_path, monkeypatch):
    module, name = PROJECT["scripts"]["shortgan"].split(":")
    command = getattr(importlib.import_module(module), name)
    args = ["fit", "--config", "configs/quickstart.yaml", "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "1", "--model.init_args.pretrain_epochs", "0",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
            "--model.init_args.classifier_checkpoint", "null"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["shortgan", *args])
    # What pip's console script does with it.
    with pytest.raises(SystemExit) as exit_:
        sys.exit(command())
    assert exit_.value.code in (None, 0)
    assert (tmp_path / "quickstart" / "version_0" / "checkpoints" / "last.ckpt").is_file()
