"""The adversarial iteration as one function of tensors, so that `torch.compile` can take it whole.

`GAN` runs an iteration as PyTorch code that calls `backward()` and `optimizer.step()`; the compiler
cannot follow either inside one graph, so compiling G and D (`compile_mode`) leaves the optimizer
steps, the noise draws and the weight average as hundreds of separate small kernels. Here the same
iteration is written functionally: `torch.func.grad_and_value` differentiates the losses with respect
to parameters passed as arguments, Adam is tensor maths on the optimizers' own state tensors, and every
update is an in-place write into the modules' parameters and buffers. One call is then one compiled
graph (one CUDA-graph launch with `mode="reduce-overhead"`), with no host reads.

The parameters, buffers and optimizer states are the modules' and `torch.optim.Adam`'s own tensors,
updated in place: checkpoints, resume, Lightning's loop and the eager path all see the same objects.
"""

from typing import Callable, Optional

import torch
from torch import nn
from torch.func import functional_call, grad_and_value

Tensors = dict[str, torch.Tensor]
CURVES = ("d_loss", "d_real", "d_fake", "critic_gap", "g_loss")


def unsupported_optimizer(optimizer: torch.optim.Optimizer) -> Optional[str]:
    """Why `optimizer` cannot be run as tensor maths here, or None if it can (Adam or AdamW, one group)."""
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
        return f"{type(optimizer).__name__} is not Adam or AdamW"
    if len(optimizer.param_groups) != 1:
        return "the optimizer has several parameter groups"
    group = optimizer.param_groups[0]
    for flag in ("amsgrad", "maximize", "differentiable"):
        if group.get(flag):
            return f"the optimizer sets {flag}"
    return None


class AdamMaths:
    """Adam's (or AdamW's) update as in-place tensor maths on a `torch.optim.Adam` instance's own state.

    The state tensors (`step`, `exp_avg`, `exp_avg_sq`) are created as Adam creates them, with `step`
    on the parameter's device (as fused or capturable Adam keep it), so the optimizer's state_dict, and
    so checkpoints, are what `optimizer.step()` would have left. The learning rate is a tensor that
    `sync_lr` refreshes from the param group: a scheduler may change it without a recompile.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, named_params: dict[str, nn.Parameter]) -> None:
        self.optimizer = optimizer
        self.names = list(named_params)
        self.params = list(named_params.values())
        group = optimizer.param_groups[0]
        ours, theirs = {id(p) for p in self.params}, {id(p) for p in group["params"]}
        if ours != theirs:
            raise ValueError("the optimizer does not hold exactly the network's parameters")
        self.decoupled = isinstance(optimizer, torch.optim.AdamW)
        self.lr = torch.zeros((), dtype=torch.float32, device=self.params[0].device)
        self._lr_value: Optional[float] = None
        self.sync_lr()

    def sync_lr(self) -> None:
        """Copy the param group's learning rate into `lr` if it changed (one small write, no read)."""
        lr = self.optimizer.param_groups[0]["lr"]
        if lr != self._lr_value:
            self.lr.fill_(lr)
            self._lr_value = lr

    def init_state(self) -> None:
        """Create the state Adam would create on its first step; move `step` onto the parameters' device."""
        for p in self.params:
            state = self.optimizer.state[p]
            if not state:
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            elif state["step"].device != p.device:
                state["step"] = state["step"].to(p.device)

    def state_tensors(self) -> list[torch.Tensor]:
        return [t for p in self.params for t in self.optimizer.state[p].values() if isinstance(t, torch.Tensor)]

    @torch.no_grad()
    def step(self, grads: Tensors) -> None:
        group = self.optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        eps, weight_decay = group["eps"], group["weight_decay"]
        for name, p in zip(self.names, self.params):
            state = self.optimizer.state[p]
            grad, step = grads[name], state["step"]
            step.add_(1)
            if weight_decay and self.decoupled:
                p.mul_(1 - self.lr * weight_decay)
            elif weight_decay:
                grad = grad.add(p, alpha=weight_decay)
            state["exp_avg"].lerp_(grad, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            bias_correction1 = 1 - torch.pow(beta1, step)
            bias_correction2_sqrt = (1 - torch.pow(beta2, step)).sqrt()
            denom = (state["exp_avg_sq"].sqrt() / bias_correction2_sqrt).add_(eps)
            p.sub_(self.lr / bias_correction1 * state["exp_avg"] / denom)


class AdversarialIteration:
    """One adversarial iteration of `GAN` as a single function: the D step (noise draws, D's loss,
    its Adam update, optional weight clipping), then `g_steps` G steps (each with its own noise, G's
    loss through D, G's Adam update), then the weight-average update, all writing in place into the
    modules' parameters and buffers and the optimizers' state.

    It draws its random numbers in the order `GAN`'s eager step does and computes the same maths,
    so the two paths agree up to float rounding, with two exceptions: it draws the instance noise
    even when its std is 0 (the eager step then skips the draw), and compiled, inductor generates
    random numbers its own way unless `torch._inductor.config.fallback_random` is set.

    Args:
        generator, discriminator: the networks, in training mode.
        generator_optimizer, discriminator_optimizer: their `torch.optim.Adam` (or AdamW) instances.
        discriminator_loss: (real_logits, fake_logits) → D's loss.
        generator_loss: fake_logits → G's loss.
        g_steps: G updates per G turn.
        clip_value: clamp D's weights to ±clip_value after its step (None: no clipping).
        noise_fakes: add the instance noise to generated images too.
        ema: the weight average of G (`ExponentialMovingAverage`), or None.
        compile_mode: `torch.compile` the iteration whole (`fullgraph=True`) in this mode; None runs
            the same function eagerly.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        generator_optimizer: torch.optim.Optimizer,
        discriminator_optimizer: torch.optim.Optimizer,
        discriminator_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        generator_loss: Callable[[torch.Tensor], torch.Tensor],
        g_steps: int = 2,
        clip_value: Optional[float] = None,
        noise_fakes: bool = True,
        ema: Optional[nn.Module] = None,
        compile_mode: Optional[str] = None,
    ) -> None:
        self.generator, self.discriminator = generator, discriminator
        self.discriminator_loss, self.generator_loss = discriminator_loss, generator_loss
        self.g_steps, self.clip_value, self.noise_fakes = g_steps, clip_value, noise_fakes
        self.adam_g = AdamMaths(generator_optimizer, dict(generator.named_parameters()))
        self.adam_d = AdamMaths(discriminator_optimizer, dict(discriminator.named_parameters()))
        self.ema = ema
        self.run = self._iteration
        if compile_mode is not None:
            self.run = torch.compile(self._iteration, fullgraph=True, mode=compile_mode)
        device = next(generator.parameters()).device
        self.noise_std = torch.zeros((), device=device)
        self._noise_std_value: Optional[float] = None
        # The region writes its curves here (a G-less iteration leaves g_loss as it was): under CUDA
        # graphs a graph's outputs are overwritten by its next replay, this buffer is not.
        self.curves = torch.zeros(len(CURVES), device=device)
        self.curve_views = {name: self.curves[i] for i, name in enumerate(CURVES)}
        self._prepared = False
        self._first_step: Optional[torch.Tensor] = None

    def prepare(self) -> None:
        """Bring the optimizer state into the form the iteration updates; call again after a state load."""
        self.adam_g.init_state()
        self.adam_d.init_state()
        if self.generator.training is False or self.discriminator.training is False:
            raise RuntimeError("the networks must be in training mode")
        # CUDA graphs replay on fixed memory: tensors that live across iterations keep their address.
        for t in (*self.adam_g.state_tensors(), *self.adam_d.state_tensors(), self.adam_g.lr, self.adam_d.lr,
                  self.noise_std, self.curves):  # fmt: skip
            torch._dynamo.mark_static_address(t)
        self._first_step = self.adam_d.optimizer.state[self.adam_d.params[0]]["step"]
        self._prepared = True

    def _state_replaced(self) -> bool:
        # optimizer.load_state_dict (a divergence rollback) puts new state tensors in place.
        return self.adam_d.optimizer.state[self.adam_d.params[0]].get("step") is not self._first_step

    def __call__(
        self, real: torch.Tensor, noise_std: float, g_turn: bool = True, labels: Optional[torch.Tensor] = None
    ) -> Tensors:
        """Run one iteration on the batch `real` (of classes `labels`, for conditional networks) with
        instance noise of std `noise_std`; return its curves (d_loss, d_real, d_fake, critic_gap,
        g_loss) as 0-dim views that each call overwrites."""
        if not self._prepared or self._state_replaced():
            self.prepare()
        self.adam_g.sync_lr()
        self.adam_d.sync_lr()
        if noise_std != self._noise_std_value:
            # A tensor, not a Python float: the compiled graph would be specialised on a float.
            self.noise_std.fill_(noise_std)
            self._noise_std_value = noise_std
        started = self.ema is not None and self.ema.started()
        # Always averaging inside keeps one graph; the average's first update is a copy of G, which
        # overwrites what the region averaged (its count, 1 after the region, is then right too).
        self.run(real, labels, g_turn, self.ema is not None)
        if self.ema is not None and not started:
            self.ema.copy_from(self.generator)
        return self.curve_views

    # ---- the function that is compiled -----------------------------------------------------------

    def _noisy(self, images: torch.Tensor) -> torch.Tensor:
        return images + self.noise_std * torch.randn_like(images)

    def _iteration(self, real: torch.Tensor, labels: Optional[torch.Tensor], g_turn: bool, average: bool) -> None:
        generator, discriminator = self.generator, self.discriminator
        b = real.size(0)
        cond = () if labels is None else (labels,)  # conditional networks: the fakes take the real classes
        d_params = {k: v.detach() for k, v in discriminator.named_parameters()}
        d_buffers = dict(discriminator.named_buffers())
        g_params = {k: v.detach() for k, v in generator.named_parameters()}
        g_buffers = dict(generator.named_buffers())

        # (1) update D: real (+ noise) → "real", G(z) → "fake". Draws in the eager step's order.
        z = torch.randn(b, generator.latent_dim, device=real.device, dtype=real.dtype)
        with torch.no_grad():
            fake = generator(z, *cond)  # updates G's BatchNorm statistics, as the eager D step does
        real_in = self._noisy(real)
        fake_in = self._noisy(fake) if self.noise_fakes else fake

        # Buffers (spectral norm's power-iteration vectors) are arguments, not captured: torch.func
        # refuses in-place writes into captured tensors, and the forward writes into them.
        def d_loss(params: Tensors, buffers: Tensors) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
            real_logits = functional_call(discriminator, (params, buffers), (real_in, *cond))
            fake_logits = functional_call(discriminator, (params, buffers), (fake_in, *cond))
            return self.discriminator_loss(real_logits, fake_logits), (real_logits, fake_logits)

        d_grads, (loss_d, (real_logits, fake_logits)) = grad_and_value(d_loss, has_aux=True)(d_params, d_buffers)
        self.adam_d.step(d_grads)
        if self.clip_value is not None:
            with torch.no_grad():
                for p in discriminator.parameters():
                    p.clamp_(-self.clip_value, self.clip_value)
        real_logits, fake_logits = real_logits.detach().float(), fake_logits.detach().float()
        d_curves = [loss_d.detach(), torch.sigmoid(real_logits).mean(), torch.sigmoid(fake_logits).mean(),
                    real_logits.mean() - fake_logits.mean()]  # fmt: skip
        self.curves[:4].copy_(torch.stack(d_curves))

        # (2) update G g_steps times on fresh noise: make D call the fakes real. The parameter dicts
        # hold detached views of the parameters, so they see every in-place Adam update.
        if g_turn:

            def g_loss(params: Tensors, g_buffers: Tensors, d_buffers: Tensors, z: torch.Tensor) -> torch.Tensor:
                fake = functional_call(generator, (params, g_buffers), (z, *cond))
                if self.noise_fakes:
                    fake = self._noisy(fake)
                return self.generator_loss(functional_call(discriminator, (d_params, d_buffers), (fake, *cond)))

            for _ in range(self.g_steps):
                z = torch.randn(b, generator.latent_dim, device=real.device, dtype=real.dtype)
                g_grads, loss_g = grad_and_value(g_loss)(g_params, g_buffers, d_buffers, z)
                self.adam_g.step(g_grads)
            self.curves[4].copy_(loss_g.detach())

        # (3) the weight average follows G.
        if average:
            self.ema.average(self.generator)
