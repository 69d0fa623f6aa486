"""Scratch: anneal instance noise linearly to `end` over `epochs` adversarial epochs.

Noise of std 0.1 on D's inputs hides speckle of smaller amplitude from D; annealing it lets D see
(and G remove) the speckle once training is stable. Used by experiments/results/plateau2/anneal*.yaml.
"""

import lightning as L


class NoiseAnneal(L.Callback):
    def __init__(self, start: float = 0.1, end: float = 0.0, epochs: int = 30) -> None:
        self.start, self.end, self.epochs = start, end, epochs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        adversarial = max(0, trainer.current_epoch - pl_module.hparams.pretrain_epochs)
        t = min(1.0, adversarial / self.epochs)
        pl_module.hparams.instance_noise = self.start + t * (self.end - self.start)
        pl_module.log("train/instance_noise", pl_module.hparams.instance_noise)
