"""The method registry and the two small records a loss reads and returns."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from workloads.config import MethodConfig


@dataclass
class Logits:
    """What the training loop hands a loss: labels and logits (with gradients unless noted)."""

    y: Tensor
    adv: Tensor  # f(x*)
    nat: Tensor | None = None  # f(x), when the method `uses_nat`
    start: Tensor | None = None  # f(x0) at the attack's start point, detached (DER's AAE test)
    sgld: Tensor | None = None  # f(x_sgld), when the method `uses_sgld`


@dataclass
class Terms:
    """A loss and what telemetry logs of it (batch means, or None)."""

    loss: Tensor
    reg: Tensor | None = None
    weat_w: Tensor | None = None


Loss = Callable[[Logits, MethodConfig], Terms]


@dataclass(frozen=True)
class Method:
    name: str
    attack: str | None  # inner attack; None: chosen by the config (`method.base`, DER)
    loss: Loss
    uses_nat: bool = False  # the loss needs f(x) with gradients
    uses_sgld: bool = False  # the loss needs SGLD samples from the model (JEAT)
    adversarial: bool = True  # False: no inner attack at all (ERM)

    def attack_name(self, cfg: MethodConfig, override: str | None = None) -> str:
        return override or self.attack or cfg.base


METHODS: dict[str, Method] = {}


def register(name: str, attack: str | None, **flags: bool) -> Callable[[Loss], Loss]:
    """Decorator: register `loss` as method `name` with inner attack `attack`."""

    def wrap(loss: Loss) -> Loss:
        METHODS[name] = Method(name, attack, loss, **flags)
        return loss

    return wrap


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"method.name: unknown method {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name]
