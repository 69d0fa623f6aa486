"""Multi-process training (issue 6): the GAN under Lightning's DDP on 2 CPU processes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow


def run_ddp(root: Path, *args: str, probe: Path | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    """`python main.py fit` with 2 CPU processes under `--trainer.strategy ddp` (Lightning launches the second)."""
    extra = []
    if probe is not None:
        config = root / "probe.yaml"
        config.write_text(
            f"trainer:\n  callbacks:\n    - class_path: ddp_probe.Probe\n      init_args: {{out_dir: '{probe}'}}\n"
        )
        extra = ["--config", str(config)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "main.py", "fit", "--config", "configs/quickstart.yaml", *extra,
               "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
               "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
               "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2",
               "--model.init_args.pretrain_epochs", "1", "--model.init_args.classifier_checkpoint", "null", *args]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        # A hung collective would leave both processes waiting forever: kill the whole group.
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def test_ddp_trains_both_networks_in_step_writes_one_run_and_resumes(tmp_path, classifier_checkpoint):
    probe = tmp_path / "probe"
    probe.mkdir()
    metrics = ["--model.init_args.classifier_checkpoint", str(classifier_checkpoint),
               "--model.init_args.eval_every_n_epochs", "1", "--model.init_args.num_eval_samples", "200"]  # fmt: skip
    done = run_ddp(tmp_path, "--trainer.max_epochs", "3", *metrics, probe=probe)
    assert done.returncode == 0, done.stderr[-3000:]

    ranks = [torch.load(probe / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    # Each process saw its own shard of the data and drew its own noise...
    assert ranks[0]["batch_sum"] != ranks[1]["batch_sum"]
    assert not torch.equal(ranks[0]["rng"], ranks[1]["rng"])
    # ...yet both end with the same weights: gradients of G and D were averaged every step. Spectral
    # norm's power-iteration vectors depend on the weights only, so they agree as well.
    state0, state1 = ranks[0]["state"], ranks[1]["state"]
    shared = [k for k in state0 if "running_" not in k and "num_batches_tracked" not in k]
    assert any(k.startswith("generator.") for k in shared) and any(k.endswith("_u") for k in shared)
    different = [k for k in shared if not torch.equal(state0[k], state1[k])]
    assert different == []
    # The metrics were computed from both processes' samples: every process reports the same values.
    assert "val/domain_fid" in ranks[0]["metrics"]
    assert ranks[0]["metrics"] == pytest.approx(ranks[1]["metrics"])

    # One run folder, one events file, one set of checkpoints (rank 0 writes them), holding rank 0's weights.
    (run,) = (tmp_path / "quickstart").iterdir()
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch=2-step=28.ckpt", "last.ckpt"]
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert torch.equal(last["state_dict"]["generator.project.weight"], state0["generator.project.weight"])

    resumed = run_ddp(tmp_path, "--trainer.max_epochs", "4", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [p.name for p in (tmp_path / "quickstart").iterdir()] == [run.name]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 3


def test_sync_batchnorm_on_cpu_processes_ends_in_one_clear_line(tmp_path):
    failed = run_ddp(tmp_path, "--trainer.max_epochs", "2", "--trainer.sync_batchnorm", "true")
    assert failed.returncode == 2
    assert "error: trainer.sync_batchnorm needs GPUs" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_a_conditional_gan_trains_under_ddp(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    done = run_ddp(tmp_path, "--config", "configs/conditional.yaml", "--trainer.max_epochs", "2", probe=probe)
    assert done.returncode == 0, done.stderr[-3000:]
    states = [torch.load(probe / f"rank{r}.pt", weights_only=True)["state"] for r in (0, 1)]
    # Each process trained on its own shard's labels, and the class vectors stayed in step.
    for key in ("generator.class_bias.weight", "discriminator.class_embedding.parametrizations.weight.original"):
        assert torch.equal(states[0][key], states[1][key]), key
    assert states[0]["generator.class_bias.weight"].abs().sum() > 0  # learnt from zero
