"""Compression for CPU inference: dynamic int8 quantization, magnitude pruning, and size
reports. Plain PyTorch (no Lightning), so it applies to any mmctx model or to a model
imported into another project.

* :func:`quantize_dynamic_int8` — ``torch.ao.quantization.quantize_dynamic``: the weights of
  ``nn.Linear``, ``nn.GRU`` and ``nn.LSTM`` are stored in int8 and activations are
  quantized on the fly, per batch. It works on mmctx's attention modules (their projections
  are ``nn.Linear``; ``F.scaled_dot_product_attention`` itself stays fp32) and on the packed
  GRU/LSTM of :class:`~mmctx.encoders.RNNAudioEncoder` (the quantized RNNs accept
  ``PackedSequence``). Convolutions (the timm image backbone, the audio front end's conv
  subsampling) are not dynamically quantizable and stay fp32. CPU only (fbgemm / qnnpack).
* :func:`prune_magnitude` / :func:`make_pruning_permanent` / :func:`sparsity` —
  ``torch.nn.utils.prune``: global or per-layer L1 (magnitude) unstructured pruning of
  weights, then ``prune.remove`` so that the zeros are baked into plain parameters (the
  ``weight_orig`` / ``weight_mask`` pair disappears and the state dict is the original
  one). For a sparsity *schedule* during training, use Lightning's ``ModelPruning``
  callback (``configs/prune.yaml``) and call :func:`make_pruning_permanent` afterwards.
* :func:`distillation_loss` — Hinton et al.'s knowledge-distillation loss (the Lightning
  task is :class:`mmctx.trainers.DistillationTask`).
* :func:`model_size_bytes` — the size of ``torch.save(model.state_dict())``, i.e. on disk.

Unstructured sparsity alone does not shrink a dense state dict or speed up dense kernels;
it pays off when combined with compressed storage (e.g. ``torch.save`` of ``to_sparse()``
tensors) or sparse kernels. :func:`model_size_bytes` reports the dense size.
"""

from __future__ import annotations

import copy
import io

import torch
from torch import nn
from torch.nn.utils import prune

# re-exported: its home is mmctx.losses
from mmctx.losses.distillation import distillation_loss

__all__ = [
    "QUANTIZABLE",
    "PRUNABLE",
    "quantize_dynamic_int8",
    "quantized_modules",
    "prunable_parameters",
    "prune_magnitude",
    "SparsitySchedule",
    "make_pruning_permanent",
    "sparsity",
    "model_size_bytes",
    "distillation_loss",
]

#: Module types :func:`quantize_dynamic_int8` quantizes by default.
QUANTIZABLE: tuple[type[nn.Module], ...] = (nn.Linear, nn.GRU, nn.LSTM)

#: Module types whose ``weight`` :func:`prune_magnitude` prunes by default.
PRUNABLE: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)


def quantize_dynamic_int8(
    model: nn.Module,
    types: tuple[type[nn.Module], ...] = QUANTIZABLE,
    inplace: bool = False,
) -> nn.Module:
    """Dynamic int8 quantization of ``types`` layers, for CPU inference.

    The model is put in eval mode first (quantized modules are inference-only). With
    ``inplace=False`` the original model is left untouched (a deep copy is quantized).

    Args:
        model: any ``nn.Module`` on the CPU.
        types: module classes to quantize (``nn.Linear``, ``nn.GRU``, ``nn.LSTM``, ...).
        inplace: quantize ``model`` itself instead of a copy.

    Returns:
        The quantized model; its ``nn.Linear`` layers are
        ``torch.ao.nn.quantized.dynamic.Linear`` with int8 weights.
    """
    for p in model.parameters():
        if p.device.type != "cpu":
            raise ValueError(f"quantize_dynamic_int8: the model must be on the CPU, found a parameter on {p.device}")
    if not types:
        raise ValueError("quantize_dynamic_int8: types is empty, nothing would be quantized")
    engines = torch.backends.quantized.supported_engines
    if torch.backends.quantized.engine not in ("fbgemm", "qnnpack", "x86"):
        for engine in ("x86", "fbgemm", "qnnpack"):
            if engine in engines:
                torch.backends.quantized.engine = engine
                break
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    return torch.ao.quantization.quantize_dynamic(target, set(types), dtype=torch.qint8, inplace=True)


def quantized_modules(model: nn.Module) -> dict[str, str]:
    """Names and class names of the dynamically quantized modules of ``model``."""
    return {
        name: type(m).__name__
        for name, m in model.named_modules()
        if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic")
        and type(m).__name__ in ("Linear", "GRU", "LSTM", "GRUCell", "LSTMCell", "RNNCell")
    }


def prunable_parameters(
    model: nn.Module, types: tuple[type[nn.Module], ...] = PRUNABLE, name: str = "weight"
) -> list[tuple[nn.Module, str]]:
    """``(module, "weight")`` for every module of ``types`` that has a ``name`` parameter."""
    return [
        (m, name)
        for m in model.modules()
        if isinstance(m, types) and isinstance(getattr(m, name, None), (nn.Parameter, torch.Tensor))
    ]


def prune_magnitude(
    model: nn.Module,
    amount: float,
    types: tuple[type[nn.Module], ...] = PRUNABLE,
    global_unstructured: bool = True,
) -> list[tuple[nn.Module, str]]:
    """Zero the ``amount`` fraction of smallest-magnitude weights of ``types`` layers.

    Pruning is applied as ``torch.nn.utils.prune`` reparametrisations (``weight_orig`` ×
    ``weight_mask``), which compose: pruning 0.5 then 0.5 again leaves 25 % of the weights.
    Call :func:`make_pruning_permanent` to bake the zeros into plain parameters.

    Args:
        model: the model, pruned in place.
        amount: fraction in [0, 1] of the (remaining) weights to prune.
        types: module classes whose ``weight`` is pruned.
        global_unstructured: rank all weights together (layers end with different
            sparsities, ``amount`` overall) instead of ``amount`` in every layer.

    Returns:
        The pruned ``(module, "weight")`` pairs.
    """
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"prune_magnitude: amount must be in [0, 1], got {amount}")
    params = prunable_parameters(model, types)
    if not params:
        raise ValueError(f"prune_magnitude: the model has no {[t.__name__ for t in types]} layers to prune")
    if global_unstructured:
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    else:
        for module, name in params:
            prune.l1_unstructured(module, name, amount=amount)
    return params


class SparsitySchedule:
    """Gradual magnitude-pruning schedule (Zhu & Gupta, 2017), as a callable ``epoch -> amount``.

    The target sparsity after epoch ``e`` rises along a cubic from ``initial_sparsity`` to
    ``final_sparsity`` between ``start_epoch`` and ``end_epoch`` (inclusive)::

        s(e) = s_f + (s_i - s_f) * (1 - (e - start + 1) / (end - start + 1)) ** 3

    Pruning compounds (each call prunes a fraction of the weights still unpruned), so the
    callable returns the *incremental* amount ``1 - (1 - s(e)) / (1 - s(e - 1))`` that takes
    the sparsity from ``s(e - 1)`` to ``s(e)``; 0 outside the window. It is what Lightning's
    ``ModelPruning(amount=...)`` expects (called with the epoch that just ended; use it with
    ``use_global_unstructured: true`` so the sparsity is the model's overall one).

    Args:
        final_sparsity: s_f, in [0, 1).
        end_epoch: the last epoch at which weights are pruned (s reaches s_f after it).
        start_epoch: the first epoch at which weights are pruned.
        initial_sparsity: s_i, reached after ``start_epoch - 1`` (0: dense until then).
    """

    def __init__(
        self, final_sparsity: float, end_epoch: int, start_epoch: int = 0, initial_sparsity: float = 0.0
    ) -> None:
        if not 0.0 <= initial_sparsity <= final_sparsity < 1.0:
            raise ValueError(
                "SparsitySchedule: need 0 <= initial_sparsity <= final_sparsity < 1, got "
                f"initial_sparsity={initial_sparsity}, final_sparsity={final_sparsity}"
            )
        if end_epoch < start_epoch or start_epoch < 0:
            raise ValueError(f"SparsitySchedule: need 0 <= start_epoch <= end_epoch, got {start_epoch}, {end_epoch}")
        self.final_sparsity = final_sparsity
        self.initial_sparsity = initial_sparsity
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch

    def target(self, epoch: int) -> float:
        """Cumulative sparsity after pruning at the end of ``epoch``."""
        if epoch < self.start_epoch:
            return 0.0
        span = self.end_epoch - self.start_epoch + 1
        progress = min(epoch - self.start_epoch + 1, span) / span
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** 3

    def __call__(self, epoch: int) -> float:
        before, after = self.target(epoch - 1), self.target(epoch)
        return 0.0 if after <= before else 1.0 - (1.0 - after) / (1.0 - before)

    def __repr__(self) -> str:
        return (
            f"SparsitySchedule(final_sparsity={self.final_sparsity}, end_epoch={self.end_epoch}, "
            f"start_epoch={self.start_epoch}, initial_sparsity={self.initial_sparsity})"
        )


def make_pruning_permanent(model: nn.Module) -> list[str]:
    """``prune.remove`` every pruning reparametrisation of ``model`` (in place).

    Afterwards each pruned tensor is a plain ``nn.Parameter`` holding the zeros, the
    ``*_orig`` parameters and ``*_mask`` buffers are gone, and the state dict has the
    keys of the unpruned model (so it loads into a fresh model of the same architecture).

    Returns:
        ``"<module>.<param>"`` names made permanent.
    """
    done = []
    for module_name, module in model.named_modules():
        # one hook per pruned tensor (repeated pruning is merged into one PruningContainer)
        names = [h._tensor_name for h in module._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]
        for name in names:
            prune.remove(module, name)
            done.append(f"{module_name}.{name}" if module_name else name)
    return done


def sparsity(model: nn.Module, types: tuple[type[nn.Module], ...] = PRUNABLE, name: str = "weight") -> dict[str, float]:
    """Fraction of exact zeros in the ``name`` tensor of each ``types`` layer, and overall.

    Reads the effective tensor (``module.weight``), so it works before and after
    :func:`make_pruning_permanent`.

    Returns:
        ``{"<module>.weight": fraction, ..., "total": fraction over all of them}``.
    """
    report: dict[str, float] = {}
    zeros = total = 0
    for module_name, module in model.named_modules():
        if not isinstance(module, types):
            continue
        tensor = getattr(module, name, None)
        if not isinstance(tensor, torch.Tensor):
            continue
        z = int((tensor == 0).sum())
        report[f"{module_name}.{name}"] = z / tensor.numel()
        zeros += z
        total += tensor.numel()
    report["total"] = zeros / total if total else 0.0
    return report


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: the model's size on disk (dense)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
