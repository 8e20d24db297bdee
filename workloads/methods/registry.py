"""The method registry, the two small records a loss reads and returns, and which config fields a trial reads."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from torch import Tensor


@dataclass
class MethodConfig:
    name: str = "fgsm"
    beta: float = 6.0  # TRADES/WEAT/MART trade-off; DER's regulariser weight
    gamma: float = 0.0  # DER hinge margin
    base: str = "rs_fgsm"  # DER's inner attack: a single-step attack (AAE-gated) or pgd (every sample)
    sgld_steps: int = 20  # JEAT: SGLD steps per batch (JEM default)
    sgld_step_size: float = 1.0
    sgld_noise: float = 0.01
    buffer_size: int = 10000  # JEAT replay buffer
    reinit: float = 0.05  # JEAT: probability to restart a buffer chain from U(0,1)


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
    knobs: tuple[str, ...] = ()  # the `method.*` fields besides `name` that its loss and the training loop read

    def attack_name(self, cfg: MethodConfig, override: str | None = None) -> str:
        return override or self.attack or cfg.base


METHODS: dict[str, Method] = {}


def register(name: str, attack: str | None, knobs: tuple[str, ...] = (), **flags: bool) -> Callable[[Loss], Loss]:
    """Decorator: register `loss` as method `name` with inner attack `attack`, reading `method.<knob>`."""
    unknown = [k for k in knobs if k == "name" or k not in MethodConfig.__dataclass_fields__]
    if unknown:
        raise ValueError(f"method {name}: knobs {unknown} are not MethodConfig fields besides name")

    def wrap(loss: Loss) -> Loss:
        METHODS[name] = Method(name, attack, loss, knobs=tuple(knobs), **flags)
        return loss

    return wrap


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"method.name: unknown method {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name]


def read_fields(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened config (`workloads.config.flatten`) less the `method.*` and `attack.*` fields its trial
    never reads: what `trial_id` hashes and `analysis.rank` groups on.

    Kept: every other field; `method.name` and the method's `knobs`; `attack.eps` (also the evaluation
    radius); the `ATTACK_KNOBS` of the attack the method runs (none for ERM); `attack.name` only when it
    replaces the method's own attack (`method=pgd attack.name=pgd` is `method=pgd`). A flat config of an
    unknown method comes back whole. Keys missing from `flat` stay missing.
    """
    from workloads.attacks import ATTACK_KNOBS

    method = METHODS.get(flat.get("method.name"))  # type: ignore[arg-type]
    if method is None:
        return dict(flat)
    keep = {"method.name", "attack.eps", *(f"method.{k}" for k in method.knobs)}
    if method.adversarial:
        own = method.attack or flat.get("method.base") or MethodConfig.base
        attack = flat.get("attack.name") or own
        keep |= {f"attack.{k}" for k in ATTACK_KNOBS.get(attack, ("alpha", "steps", "noise"))}
        if attack != own:
            keep.add("attack.name")
    return {k: v for k, v in flat.items() if not k.startswith(("method.", "attack.")) or k in keep}
