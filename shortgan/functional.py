"""The adversarial iteration run functionally, so that `torch.compile` can take it whole.

`EagerUpdates` minimises with `backward()` and `optimizer.step()`, which the compiler cannot follow
inside one graph: compiling only G and D leaves the optimizer steps, the noise draws and the weight
average as hundreds of small kernels. `FunctionalUpdates` minimises the same objectives with
`torch.func.grad_and_value` over parameters passed as arguments and Adam written as in-place tensor
maths on the optimizers' own state, so that `FunctionalIteration` (the very `adversarial_iteration`
of shortgan/iteration.py) is one graph: one CUDA-graph launch with `mode="reduce-overhead"`, no host
reads. Parameters, buffers and optimizer states are the modules' and `torch.optim.Adam`'s own tensors,
updated in place: checkpoints, resume, Lightning's loop and the eager path all see the same objects.
"""

from __future__ import annotations  # nested functions' annotations stay strings: dynamo traces through them

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad_and_value

from shortgan.iteration import AdversarialRecipe, Network, Objective, adversarial_iteration

Tensors = dict[str, torch.Tensor]
CURVES = ("d_loss", "d_real", "d_fake", "critic_gap", "g_loss")


def unsupported_network(discriminator: nn.Module, recipe: AdversarialRecipe) -> str | None:
    """Why the functional iteration cannot run this recipe on these networks, or None."""
    if recipe.input_gradient_penalty and any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in discriminator.modules()
    ):
        # The penalty's gradient is a torch.func transform nested in D's, and torch.func refuses the
        # in-place BatchNorm statistics update on tensors captured from the outer transform.
        return "the gradient penalty through a discriminator with BatchNorm is not written functionally"
    return None


def unsupported_optimizer(optimizer: torch.optim.Optimizer) -> str | None:
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
        if {id(p) for p in self.params} != {id(p) for p in group["params"]}:
            raise ValueError("the optimizer does not hold exactly the network's parameters")
        # AdamW is Adam with this flag set; Adam(decoupled_weight_decay=True) is AdamW too.
        self.decoupled = bool(group.get("decoupled_weight_decay", isinstance(optimizer, torch.optim.AdamW)))
        self.lr = torch.zeros((), dtype=torch.float32, device=self.params[0].device)
        self._lr_value: float | None = None
        self.sync_lr()

    def sync_lr(self) -> None:
        """Copy the param group's learning rate into `lr` if it changed (one small write, no read)."""
        lr = self.optimizer.param_groups[0]["lr"]
        if lr != self._lr_value:
            self.lr.fill_(lr)
            self._lr_value = lr

    def init_state(self) -> None:
        """Create the state Adam would create on its first step (for the parameters that take gradients);
        move `step` onto the parameters' device."""
        for p in self.params:
            if not p.requires_grad:
                continue  # torch's Adam creates no state for it (and state is a defaultdict: no lookup)
            state = self.optimizer.state[p]
            if not state:
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            elif state["step"].device != p.device:
                state["step"] = state["step"].to(p.device)

    def state_tensors(self) -> list[torch.Tensor]:
        return [t for p in self.params for t in self.optimizer.state.get(p, {}).values() if isinstance(t, torch.Tensor)]

    @torch.no_grad()
    def step(self, grads: Tensors) -> None:
        group = self.optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        eps, weight_decay = group["eps"], group["weight_decay"]
        for name, p in zip(self.names, self.params):
            if name not in grads:
                continue  # frozen: torch's Adam skips a parameter without a gradient
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


class FunctionalUpdates:
    """`Updates` as functions of tensors: `torch.func.grad_and_value` of the objective with respect to
    the network's parameters (passed as arguments, buffers too, since the forward writes into
    spectral norm's and BatchNorm's buffers), then `AdamMaths`. Counts the optimizer steps it makes
    in `steps` (a Python int, so that Lightning's step counter can be advanced after a compiled call).
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, optimizers: dict[str, torch.optim.Optimizer]):
        self.networks = {"generator": generator, "discriminator": discriminator}
        self.adam = {
            name: AdamMaths(optimizers[name], dict(net.named_parameters())) for name, net in self.networks.items()
        }
        self.steps = 0

    def minimise(self, network: Network, objective: Objective) -> tuple[torch.Tensor, Any]:
        # Detached views of the parameters: they see every in-place Adam update.
        params = {name: {k: v.detach() for k, v in net.named_parameters()} for name, net in self.networks.items()}
        buffers = {name: dict(net.named_buffers()) for name, net in self.networks.items()}
        # A parameter a user froze (requires_grad False) gets no gradient eagerly, and torch's Adam
        # skips it: no step, no state. Here it is a constant, and AdamMaths skips it the same way.
        trainable = {k: params[network][k] for k, v in self.networks[network].named_parameters() if v.requires_grad}

        def loss(trained: Tensors, buffers: dict[str, Tensors]) -> tuple[torch.Tensor, Any]:
            calls = {name: partial(_call, net, {**params[name], **trained} if name == network else params[name],
                                   buffers[name])
                     for name, net in self.networks.items()}  # fmt: skip
            return objective(calls["generator"], calls["discriminator"])

        grads, (value, aux) = grad_and_value(loss, has_aux=True)(trainable, buffers)
        self.adam[network].step(grads)
        self.steps += 1
        return value.detach(), aux

    def evaluate(self, objective: Objective) -> tuple[torch.Tensor, Any]:
        with torch.no_grad():
            return objective(self.networks["generator"], self.networks["discriminator"])

    @staticmethod
    def input_gradient(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        # Nested in minimise's transform, where autograd.grad cannot run: the same numbers.
        return torch.func.grad(lambda x: f(x).sum())(x)


def _call(network: nn.Module, params: Tensors, buffers: Tensors, *args: torch.Tensor) -> torch.Tensor:
    return functional_call(network, (params, buffers), args)


class FunctionalIteration:
    """`adversarial_iteration` run with `FunctionalUpdates`, compiled whole or not.

    It draws its random numbers in the order the eager run does and computes the same maths, so the
    two agree up to float rounding, with two exceptions: it draws the instance noise even when its
    std is 0 (the eager run then skips the draw), and compiled, inductor generates random numbers its
    own way unless `torch._inductor.config.fallback_random` is set.

    Args:
        generator, discriminator: the networks (D in eval mode if the recipe freezes it).
        generator_optimizer, discriminator_optimizer: their `torch.optim.Adam` (or AdamW) instances.
        recipe: the iteration's GAN decisions.
        average: the weight average of G (`ExponentialMovingAverage`), or None.
        compile_mode, compile_backend: `torch.compile` the iteration whole (`fullgraph=True`) with these
            (a mode only for inductor); backend None runs the same function uncompiled.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        generator_optimizer: torch.optim.Optimizer,
        discriminator_optimizer: torch.optim.Optimizer,
        recipe: AdversarialRecipe,
        average: nn.Module | None = None,
        compile_mode: str | None = None,
        compile_backend: str | None = "inductor",
    ) -> None:
        self.generator, self.discriminator, self.recipe, self.average = generator, discriminator, recipe, average
        self.updates = FunctionalUpdates(generator, discriminator,
                                         {"generator": generator_optimizer, "discriminator": discriminator_optimizer})  # fmt: skip
        self.run = self._iteration
        if compile_backend is not None:
            self.run = torch.compile(self._iteration, fullgraph=True, mode=compile_mode, backend=compile_backend)
        device = next(generator.parameters()).device
        # A tensor, not a Python float: the compiled graph would be specialised on a float.
        self.noise_std = torch.zeros((), device=device)
        self._noise_std_value: float | None = None
        # The iteration's curves are copied here: under CUDA graphs a graph's outputs are overwritten
        # by its next replay, this buffer is not.
        self.curves = torch.zeros(len(CURVES), device=device)
        self.curve_views = {name: self.curves[i] for i, name in enumerate(CURVES)}
        self._prepared = False
        self._first_step: torch.Tensor | None = None

    def prepare(self) -> None:
        """Bring the optimizer state into the form the iteration updates; call again after a state load."""
        # A frozen D never steps: its optimizer keeps no state, as on the eager path.
        adam = [maths for name, maths in self.updates.adam.items()
                if name == "generator" or not self.recipe.freeze_discriminator]  # fmt: skip
        for maths in adam:
            maths.init_state()
        # CUDA graphs replay on fixed memory: tensors that live across iterations keep their address.
        for t in (*(t for maths in adam for t in (*maths.state_tensors(), maths.lr)), self.noise_std, self.curves):
            torch._dynamo.mark_static_address(t)
        self._first_step = self._g_step_tensor()
        self._prepared = True

    def _g_step_tensor(self) -> torch.Tensor | None:
        maths = self.updates.adam["generator"]
        trained = next((p for p in maths.params if p.requires_grad), None)
        return maths.optimizer.state.get(trained, {}).get("step")

    def __call__(
        self, real: torch.Tensor, noise_std: float, g_turn: bool = True, labels: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], int]:
        """One iteration on `real` (of classes `labels`, for conditional networks) with instance noise
        of std `noise_std`. Returns its curves, as 0-dim views that the next call overwrites, and the
        number of optimizer steps it made."""
        # optimizer.load_state_dict (a divergence rollback) puts new state tensors in place.
        if not self._prepared or self._g_step_tensor() is not self._first_step:
            self.prepare()
        for maths in self.updates.adam.values():
            maths.sync_lr()
        if noise_std != self._noise_std_value:
            self.noise_std.fill_(noise_std)
            self._noise_std_value = noise_std
        self.updates.steps = 0
        names = self.run(real, labels, g_turn)
        for maths in self.updates.adam.values():
            # What optimizer.step() marks, so torch's LR schedulers know the optimizer has stepped.
            maths.optimizer._opt_called = True
        return {name: self.curve_views[name] for name in names}, self.updates.steps

    def _iteration(self, real: torch.Tensor, labels: torch.Tensor | None, g_turn: bool) -> tuple[str, ...]:
        curves = adversarial_iteration(self.generator, self.discriminator, self.updates, self.recipe, real, labels,
                                       self.noise_std, g_turn, self.average)  # fmt: skip
        for name, value in curves.items():
            self.curves[CURVES.index(name)].copy_(value)
        return tuple(curves)
