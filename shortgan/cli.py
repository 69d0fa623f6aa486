"""The command line: LightningCLI with run folders, resume by `--ckpt_path last`, and clear errors."""

import os
import signal
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import lightning as L
import torch
from lightning.pytorch.accelerators import AcceleratorRegistry, CPUAccelerator, CUDAAccelerator, MPSAccelerator
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from jsonargparse import Namespace
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from shortgan.callbacks import SampleGrids, SampleWriter, SkipIdleValidation
from shortgan.data import dataset_classes
from shortgan.errors import UserError
from shortgan.generator_system import GeneratorSystem, parse_classes
from shortgan.safety import AtomicCheckpointIO, DivergenceGuard, InterruptCheckpoint, RNGState, RunCheckpoint


_VERSION_ENV = "SHORTGAN_RUN_VERSION"


def latest_checkpoint(root: str, run_name: str) -> Path:
    """The newest `last.ckpt` or `interrupted.ckpt` under `<root>/<run_name>/version_*/checkpoints/`."""
    runs = Path(root, run_name)
    candidates = sorted(
        [*runs.glob("version_*/checkpoints/last.ckpt"), *runs.glob("version_*/checkpoints/interrupted.ckpt")],
        key=lambda p: p.stat().st_mtime,
    )
    if not candidates:
        raise UserError(
            f"--ckpt_path last: no run of '{run_name}' with a last.ckpt under {Path(root, run_name)}/. "
            f"Train first, or pass a checkpoint's path."
        )
    return candidates[-1]


def check_accelerator(accelerator: Any) -> None:
    """Raise a UserError if `--trainer.accelerator` names a kind of device this machine does not have."""
    if not isinstance(accelerator, str) or accelerator == "auto":
        return
    name = accelerator.lower()
    if name == "gpu":
        available = CUDAAccelerator.is_available() or MPSAccelerator.is_available()
    elif name in AcceleratorRegistry:
        available = AcceleratorRegistry[name]["accelerator"].is_available()
    else:
        return  # Lightning refuses an unknown name with the list of valid ones.
    if not available:
        raise UserError(
            f"--trainer.accelerator {accelerator}: this machine has no {name} device that PyTorch can use. "
            f"Pass --trainer.accelerator cpu, or auto (a GPU where there is one, else the CPU)."
        )


def check_readable(ckpt: Path) -> None:
    """Raise a UserError if the checkpoint at `ckpt` cannot be loaded (truncated, damaged, not a checkpoint)."""
    try:
        # The same load Lightning does later (15 ms for a quickstart checkpoint): a file that passes here
        # loads there too. Damage inside a tensor's bytes goes unnoticed: torch checks no checksums.
        torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:
        first_line = str(err).strip().split("\n")[0].split(". ")[0]
        detail = f"{type(err).__name__}: {first_line}" if first_line else type(err).__name__
        raise UserError(
            f"--ckpt_path: {ckpt} is not a readable checkpoint; it may be truncated or damaged ({detail}). "
            f"Pass a complete checkpoint, e.g. the run's last.ckpt or an epoch=N.ckpt."
        ) from err


def ensure_writable(folder: Path, argument: str) -> None:
    """Create `folder` and write a probe file in it, or raise a UserError naming `argument`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UserError(
            f"Cannot write into {folder} ({err.strerror or err}): pass a folder you can write to with {argument}."
        ) from err


def claim_version(run_root: Path) -> str:
    """Create and return the next free `version_N` folder. `mkdir` is atomic, so two runs started
    at once into the same root never get the same folder (TensorBoardLogger only lists folders)."""
    run_root.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name.split("_")[1]) for p in run_root.glob("version_*") if p.name.split("_")[1].isdigit()]
    n = max(taken, default=-1) + 1
    while True:
        try:
            (run_root / f"version_{n}").mkdir()
            return f"version_{n}"
        except FileExistsError:
            n += 1


def fit_networks_to_data(cfg: Namespace, count_classes: bool = True) -> None:
    """Give a GAN's two networks the data's image shape and, when they are class-conditional, its number
    of classes, so that no config is edited for a folder of 26 letters or RGB 32×32 images. Unlabelled data
    (a flat folder, arrays without y) under a conditional config train without the class. Each change
    is said in one line, and the run's saved config.yaml records the values used. Without
    `count_classes` (predict: the run's config.yaml already holds the count, and the data may be gone)
    the class count is left as configured."""
    data, model = cfg.get("data"), cfg.get("model")
    if not isinstance(data, Namespace) or not str(data.get("class_path", "")).endswith("ImageDataModule"):
        return
    init = model.get("init_args") if isinstance(model, Namespace) else None
    networks = [init.get(role) for role in ("generator", "discriminator")] if isinstance(init, Namespace) else []
    networks = [n.init_args for n in networks if isinstance(n, Namespace) and isinstance(n.get("init_args"), Namespace)]
    if len(networks) != 2:
        return  # not a GAN (a classifier, a pretrainer)
    shape = tuple(data.init_args.image_shape)
    for net in networks:
        if "image_shape" in net:
            if tuple(net.image_shape) != shape:
                rank_zero_info(f"The networks draw the data's image shape {list(shape)} (data.image_shape).")
            net.image_shape = shape
        elif shape != (1, 28, 28):
            raise UserError(f"data.image_shape {list(shape)}: this model's networks draw 1×28×28 images only; "
                            f"use the ShortGAN or MLP networks for other shapes, or data.image_shape [1, 28, 28]")  # fmt: skip
    conditional = [net for net in networks if net.get("num_classes")]
    if not conditional or not count_classes:
        return
    wanted = dataset_classes(data.init_args.dataset, data.init_args.data_dir)
    if wanted < 2:
        rank_zero_info(
            f"The data have {'one class' if wanted == 1 else 'no class labels'}: the class-conditional config "
            f"trains without the class (add --config configs/unconditional.yaml to say so yourself)."
        )
        wanted = 0
    elif any(net.num_classes != wanted for net in conditional):
        rank_zero_info(f"The data have {wanted} classes: both networks take num_classes {wanted}.")
    for net in networks:
        if "num_classes" in net:
            net.num_classes = wanted
        for per_class in ("minibatch_std_by_class", "class_batchnorm"):  # what unconditional.yaml turns off
            if not wanted and net.get(per_class):
                net[per_class] = False


class ShortGANCLI(LightningCLI):
    """LightningCLI that stores each run in `<default_root_dir>/<run_name>/version_N/`.

    That folder holds the TensorBoard events, `config.yaml`, `checkpoints/` (the newest epoch's
    checkpoint, `last.ckpt` as a hard link to it, and periodic ones) and `samples/`. `--ckpt_path
    last` resumes the newest run of `run_name`, writing into its folder so TensorBoard curves continue.
    """

    def __init__(self, *args, **kwargs) -> None:
        self.resume_version: Optional[str] = None
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_name", type=str, default="shortgan", help="Runs go to <default_root_dir>/<run_name>/.")
        parser.add_argument(
            "--samples_dir", type=Optional[str], default=None,
            help="predict: folder for samples.pt, grid.png and images/ (default: <run folder>/predictions).",
        )  # fmt: skip
        parser.add_argument(
            "--classes", type=Optional[str], default=None,
            help="predict, class-conditional models: the classes to draw in turn, e.g. 7, 1,4,7 or all (every "
                 "class); by default each sample's class is drawn by the training split's class frequencies. "
                 "labels.pt holds each sample's class.",
        )  # fmt: skip
        # Two checkpoint callbacks: last.ckpt after every epoch (for resume), and a kept copy every
        # 10 epochs. One callback cannot do both: it writes last.ckpt only when it saves a top-k
        # checkpoint, so `checkpoint` keeps its newest epoch (top 1, no monitor), and last.ckpt is
        # a hard link to that file (save_last: link), not a second copy of it.
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.add_lightning_class_args(RunCheckpoint, "periodic_checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": "link",
                "checkpoint.save_top_k": 1,
                # At the epoch's end, not the validation's: SkipIdleValidation skips idle validation loops.
                "checkpoint.save_on_train_epoch_end": True,
                "periodic_checkpoint.every_n_epochs": 10,
                "periodic_checkpoint.save_top_k": -1,
                "periodic_checkpoint.filename": "epoch={epoch:04d}",
                "periodic_checkpoint.auto_insert_metric_name": False,
                "periodic_checkpoint.save_on_train_epoch_end": True,
                "trainer.default_root_dir": "runs",
            }
        )
        parser.add_lightning_class_args(SampleGrids, "sample_grids")
        parser.add_lightning_class_args(DivergenceGuard, "divergence_guard")

    def _parse_ckpt_path(self) -> None:
        # LightningCLI merges a `--ckpt_path FILE`'s saved hyperparameters over the parsed config, so the
        # checkpoint silently won over `--model.*` flags and --config files (and `last`, resolved below
        # after that merge, did not). Here the config and the command line alone build the model, for a
        # path and `last` alike; the checkpoint gives weights and training state. To rebuild a run's
        # model as it was, pass its config.yaml: `--config runs/<run_name>/version_N/config.yaml`.
        pass

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config  # run=False: no subcommand
        check_accelerator(cfg.trainer.accelerator)
        fit_networks_to_data(cfg, count_classes=self.subcommand != "predict")
        root = cfg.trainer.default_root_dir
        if cfg.get("ckpt_path") == "last":
            cfg.ckpt_path = str(latest_checkpoint(root, cfg.run_name))
        ckpt = cfg.get("ckpt_path")
        if ckpt is None:
            return
        ckpt = Path(ckpt)
        if not ckpt.is_file():
            raise UserError(f"--ckpt_path: no file at {ckpt}")
        check_readable(ckpt)
        # A checkpoint inside <root>/<run_name>/version_N/checkpoints/ resumes into version_N.
        if self.subcommand == "fit" and ckpt.parent.name == "checkpoints":
            run = ckpt.parent.parent
            if run.parent.resolve() == Path(root, cfg.run_name).resolve():
                self.resume_version = run.name

    def instantiate_trainer(self, **kwargs):
        cfg = self.config_init[self.subcommand] if self.subcommand else self.config_init
        if cfg.get("classes") is not None and self.subcommand != "predict":
            raise UserError("--classes is for predict: it picks the classes a conditional model draws")
        if self.subcommand == "predict" and isinstance(self.model, GeneratorSystem):
            self.model.predict_classes = parse_classes(cfg.get("classes"), self.model.num_classes)
        if self.subcommand == "predict":
            # predict logs nothing; samples go next to the checkpoint's run by default.
            out = cfg.samples_dir
            if out is None and cfg.get("ckpt_path"):
                out = str(Path(cfg.ckpt_path).parent.parent / "predictions")
            if out is not None:
                ensure_writable(Path(out), "--samples_dir")
            kwargs["callbacks"] = [*(cfg.trainer.callbacks or []), SampleWriter(out)]
            kwargs["logger"] = False
        elif cfg.trainer.logger in (None, True):
            ensure_writable(Path(cfg.trainer.default_root_dir, cfg.run_name), "--trainer.default_root_dir")
            version = self.resume_version
            if version is None and rank_zero_only.rank == 0:
                version = claim_version(Path(cfg.trainer.default_root_dir, cfg.run_name))
                # DDP's launcher starts the other processes from this one's environment: they log
                # into the folder rank 0 claimed instead of claiming their own.
                os.environ[_VERSION_ENV] = version
            elif version is None:
                version = os.environ.get(_VERSION_ENV)
            kwargs["logger"] = TensorBoardLogger(
                save_dir=cfg.trainer.default_root_dir, name=cfg.run_name, version=version, default_hp_metric=False
            )
        if self.subcommand == "fit":
            kwargs["callbacks"] = [*(cfg.trainer.callbacks or []), RNGState(), SkipIdleValidation()]
        plugins = cfg.trainer.plugins or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        trainer = super().instantiate_trainer(**kwargs)
        if cfg.trainer.sync_batchnorm and isinstance(trainer.accelerator, CPUAccelerator):
            raise UserError(
                "trainer.sync_batchnorm needs GPUs: PyTorch's SyncBatchNorm does not run on CPU processes. "
                "Drop --trainer.sync_batchnorm (each process then normalises its own batch)."
            )
        if self.subcommand == "fit" and cfg.trainer.enable_checkpointing is not False:
            # Appended last, so that trainer.checkpoint_callback stays the `checkpoint` ModelCheckpoint.
            # fast_dev_run swaps in a dummy logger without a folder.
            log_dir = trainer.logger.log_dir if trainer.logger else None
            run = Path(log_dir) if log_dir else Path(cfg.trainer.default_root_dir)
            trainer.callbacks.append(InterruptCheckpoint(run / "checkpoints", "interrupted"))
        return trainer

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[L.Callback]) -> L.Trainer:
        if config.get("enable_checkpointing") is False:
            # `checkpoint` and `periodic_checkpoint` are always built, and Lightning refuses a
            # ModelCheckpoint when checkpointing is off: `--trainer.enable_checkpointing false` means none.
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        return super()._instantiate_trainer(config, callbacks)


def build_cli(args: Optional[list[str]] = None, **kwargs: Any) -> ShortGANCLI:
    """The project's LightningCLI as every entry point builds it (main.py, compare, the benchmarks):
    any model and data class by `class_path`, a resumed run rewriting its own config.yaml. `kwargs`
    go to LightningCLI (`run=False`, `trainer_defaults`, …)."""
    kwargs = {"subclass_mode_model": True, "subclass_mode_data": True, "save_config_kwargs": {"overwrite": True},
              **kwargs}  # fmt: skip
    return ShortGANCLI(args=args, **kwargs)


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Mistakes a user can fix (a `UserError` anywhere in the exception's chain) end in one `error:`
    line on stderr and exit code 2; anything else propagates with its traceback."""
    try:
        yield
    except Exception as err:
        # jsonargparse wraps what a model's __init__ raises; look for ours along the chain.
        cause: Optional[BaseException] = err
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(2)


def cli_main(args: Optional[list[str]] = None) -> Optional[ShortGANCLI]:
    """Run the CLI; mistakes a user can fix end in one line on stderr and exit code 2."""
    torch.set_float32_matmul_precision("high")
    with exit_on_user_error():
        try:
            return build_cli(args)
        except SIGTERMException:
            # Lightning exits with status 0 after a SIGTERM; a stopped run must not look finished.
            print("error: stopped by SIGTERM; checkpoints/interrupted.ckpt holds the run: resume with --ckpt_path last",
                  file=sys.stderr)  # fmt: skip
            sys.exit(128 + signal.SIGTERM)


def main() -> None:
    """The `shortgan` command: `cli_main` without its return value, which the console script would
    pass to `sys.exit` (an object there prints its repr and exits with status 1)."""
    cli_main()
