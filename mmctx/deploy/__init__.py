"""Deployment of trained models, plain PyTorch (no Lightning): compression for CPU inference
(dynamic int8 quantization, magnitude pruning, distillation loss, size reports) and export
to ``torch.export`` / ONNX."""

from mmctx.deploy.compress import (
    PRUNABLE,
    QUANTIZABLE,
    SparsitySchedule,
    distillation_loss,
    make_pruning_permanent,
    model_size_bytes,
    prunable_parameters,
    prune_magnitude,
    quantize_dynamic_int8,
    quantized_modules,
    sparsity,
)
from mmctx.deploy.export import (
    ExportableModel,
    ExportAudioEncoder,
    ExportImageEncoder,
    example_inputs,
    export_onnx,
    export_program,
    exportable,
)

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
    "ExportImageEncoder",
    "ExportAudioEncoder",
    "ExportableModel",
    "exportable",
    "example_inputs",
    "export_program",
    "export_onnx",
]
