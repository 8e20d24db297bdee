"""Make `import torchvision` work when its C++ ops library does not match the installed torch.

Why this exists: the pinned torchvision wheel may be a CUDA build whose compiled
ops (`torchvision/_C.so`) do not load next to a CPU-only torch. torchvision then
still imports its Python parts, but `torchvision/_meta_registrations.py` calls
`torch.library.register_fake("torchvision::nms")` (and `qnms`) at import time,
which raises "operator torchvision::nms does not exist" because nothing
defined those op schemas. torch-fidelity imports torchvision, so it fails
with it.

`ensure_torchvision()` imports torchvision; only if that fails for exactly this
reason does it define the two op *schemas* (no kernels) through a
`torch.library.Library("torchvision", "FRAGMENT")` and import again. The Python
parts of torchvision (transforms, utils, model definitions) then work; its C++
ops (nms, roi_align, ...) still do not - calling them raises. Nothing in
energy-at uses them. Import this module before torch_fidelity.
"""
from __future__ import annotations

import sys

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIB: torch.library.Library | None = None  # kept alive: dropping it would unregister the schemas
PATCHED = False  # True when the schemas had to be defined here


def _missing_op_error(e: BaseException) -> bool:
    return isinstance(e, RuntimeError) and "torchvision::" in str(e) and "does not exist" in str(e)


def ensure_torchvision():
    """Import and return torchvision, defining the missing `nms`/`qnms` schemas first if needed."""
    global _LIB, PATCHED
    try:
        import torchvision

        return torchvision
    except RuntimeError as e:
        if not _missing_op_error(e):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the failed import left half-initialised modules behind
    if _LIB is None:
        _LIB = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _SCHEMAS.values():
            _LIB.define(schema)
    PATCHED = True
    import torchvision

    return torchvision


ensure_torchvision()
