"""Export a :class:`~mmctx.models.FusionModel` (encoders + fusion + head) to ``torch.export``
and ONNX, with every modality's data and mask as explicit tensor inputs.

Why adapters: the eager encoders are written for training and for ragged batches, and
three of their habits cannot be captured in a static graph:

* input validation that reads tensor *values* (``check_prefix_mask``, "is any waveform too
  short?") — a data-dependent branch;
* running only the present samples (``mask.nonzero()`` then ``index_select``) — a
  data-dependent shape, and a branch on "no sample present";
* :class:`~mmctx.encoders.RNNAudioEncoder`'s *packed* GRU/LSTM
  (``pack_padded_sequence`` needs the lengths as Python ints on the CPU, and ONNX has no
  PackedSequence).

:func:`exportable` therefore swaps those encoders for inference adapters that share their
weights and compute the same outputs with static shapes (eval mode only; the inputs are
trusted, not validated):

* :class:`ExportImageEncoder`: the backbone runs on every image and rows of missing images
  are zeroed afterwards (identical per sample in eval mode, where BatchNorm uses running
  statistics);
* :class:`ExportAudioEncoder`: the RNN runs unpacked, one layer and direction at a time;
  the backward direction reads each utterance reversed *within its length* (a gather), so
  at every real frame the result equals the packed RNN's, and padding never reaches a real
  frame.

Other encoders, the fusions, the context encoder and the heads are used as they are.
Masks follow :class:`~mmctx.types.ModalityInput` (image (B,) bool, audio (B, S) bool prefix).
The exported graphs have a static batch size and input size (those of the example); export
again for another size. ONNX export uses the dynamo exporter (``torch.onnx.export(...,
dynamo=True)``, opset 18) and needs the ``onnx``/``onnxscript`` packages (``pip install
mmctx[export]``); onnxruntime runs the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from mmctx.encoders import RNNAudioEncoder, TimmImageEncoder
from mmctx.layers import lengths_to_mask, sincos_2d
from mmctx.types import ModalityInput, MultimodalBatch, Tokens

__all__ = [
    "ExportImageEncoder",
    "ExportAudioEncoder",
    "ExportableModel",
    "exportable",
    "example_inputs",
    "export_program",
    "export_onnx",
]


class ExportImageEncoder(nn.Module):
    """:class:`~mmctx.encoders.TimmImageEncoder` for export: every image goes through the
    backbone, then the rows of missing images are zeroed (eval mode: same outputs).

    Shapes:
        data (B, C, H, W), mask (B,) bool → Tokens x (B, h*w, D), mask (B, h*w)
    """

    def __init__(self, encoder: TimmImageEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.out_dim = encoder.out_dim

    def forward(self, data: Tensor, mask: Tensor) -> Tokens:
        enc = self.encoder
        feat = enc.backbone(data)[-1]  # (B, C_f, h, w)
        h, w = feat.shape[-2:]
        tokens = enc.proj(feat.flatten(2).transpose(1, 2))  # (B, h*w, D)
        tokens = tokens + sincos_2d(h, w, enc.out_dim, device=tokens.device).to(tokens.dtype)  # (B, h*w, D)
        x = tokens * mask[:, None, None].to(tokens.dtype)  # (B, h*w, D), zero rows for missing images
        return Tokens(x, mask[:, None].expand(-1, h * w))


class ExportAudioEncoder(nn.Module):
    """:class:`~mmctx.encoders.RNNAudioEncoder` for export: the same front end, and the
    GRU/LSTM run unpacked, layer by layer and direction by direction, the backward direction
    on each utterance reversed within its length (eval mode: same outputs at real frames).

    The per-direction RNNs are one-layer copies of the encoder's weights, made at
    construction (build the adapter after loading the weights).

    Shapes:
        data (B, S) float, mask (B, S) bool prefix → Tokens x (B, N, D), mask (B, N)
    """

    def __init__(self, encoder: RNNAudioEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.out_dim = encoder.out_dim
        rnn = encoder.rnn
        self.directions = 2 if rnn.bidirectional else 1
        self.layers = nn.ModuleList()
        for layer in range(rnn.num_layers):
            per_direction = nn.ModuleList()
            for direction in range(self.directions):
                in_size = rnn.input_size if layer == 0 else rnn.hidden_size * self.directions
                single = type(rnn)(in_size, rnn.hidden_size, num_layers=1, batch_first=True, bias=rnn.bias)
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                with torch.no_grad():
                    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                        if hasattr(rnn, name + suffix):
                            getattr(single, name + "_l0").copy_(getattr(rnn, name + suffix))
                per_direction.append(single.to(rnn.weight_ih_l0.device, rnn.weight_ih_l0.dtype))
            self.layers.append(per_direction)

    def forward(self, data: Tensor, mask: Tensor) -> Tokens:
        enc = self.encoder
        B, S = data.shape
        lengths = mask.sum(dim=1)  # (B,) real samples (the mask is a prefix)
        token_lengths = enc.output_lengths(lengths)  # (B,)
        N = max(int(enc.output_lengths(torch.tensor(S))), 1)
        wave = data.masked_fill(~mask, 0.0)  # (B, S)
        feats = enc._log_mel(wave, lengths.clamp_min(enc.n_fft))  # (B, F, M); missing rows are masked below
        h = x = enc.frames(feats)  # (B, N, hidden)
        t = torch.arange(N, device=data.device)[None]  # (1, N)
        last = token_lengths[:, None] - 1  # (B, 1)
        reverse = torch.where(t <= last, last - t, t)  # (B, N): reversal within the length, an involution
        for per_direction in self.layers:
            outs = [per_direction[0](h)[0]]  # (B, N, hidden): forward direction, padding comes after
            if self.directions == 2:
                index = reverse[..., None].expand(-1, -1, h.shape[-1])  # (B, N, hidden_in)
                backward = per_direction[1](h.gather(1, index))[0]  # (B, N, hidden)
                outs.append(backward.gather(1, reverse[..., None].expand(-1, -1, backward.shape[-1])))
            h = torch.cat(outs, dim=-1)  # (B, N, hidden*dirs)
        out = enc.output(h, x)  # (B, N, D)
        token_mask = lengths_to_mask(token_lengths, N)  # (B, N)
        return Tokens(out.masked_fill(~token_mask[..., None], 0.0), token_mask)


def _adapter(encoder: nn.Module) -> nn.Module:
    if isinstance(encoder, TimmImageEncoder):
        return ExportImageEncoder(encoder)
    if isinstance(encoder, RNNAudioEncoder):
        return ExportAudioEncoder(encoder)
    return encoder


class ExportableModel(nn.Module):
    """A :class:`~mmctx.models.FusionModel` with flat tensor inputs and outputs.

    ``forward(data_0, mask_0, data_1, mask_1, ...)`` takes each modality of ``modalities``
    in order. With ``output="logits"`` it returns the head's output (e.g. logits (B, K));
    with ``output="context"`` it stops after fusion (and the context encoder) and returns
    the extended context's ``(x (B, N, D), mask (B, N))``.
    """

    def __init__(self, model: nn.Module, modalities: Sequence[str] | None = None, output: str = "logits") -> None:
        super().__init__()
        if output not in ("logits", "context"):
            raise ValueError(f"ExportableModel: output must be 'logits' or 'context', got {output!r}")
        modalities = tuple(modalities or model.encoders.keys())
        unknown = [m for m in modalities if m not in model.encoders]
        if unknown:
            raise ValueError(f"ExportableModel: modalities {unknown} have no encoder (model has {list(model.encoders)})")
        self.modalities = modalities
        self.output = output
        self.encoders = nn.ModuleDict({m: _adapter(model.encoders[m]) for m in modalities})
        self.fusion = model.fusion
        self.context_encoder = model.context_encoder
        self.head = model.head

    def forward(self, *tensors: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        if len(tensors) != 2 * len(self.modalities):
            raise ValueError(f"ExportableModel: expected (data, mask) for each of {self.modalities}, got {len(tensors)} tensors")
        tokens = {m: self.encoders[m](tensors[2 * i], tensors[2 * i + 1]) for i, m in enumerate(self.modalities)}
        context = self.fusion(tokens)
        if self.context_encoder is not None:
            context = self.context_encoder(context)
        if self.output == "context":
            return context.x, context.mask
        return self.head(context)


def exportable(model: nn.Module, modalities: Sequence[str] | None = None, output: str = "logits") -> ExportableModel:
    """:class:`ExportableModel` of ``model``, in eval mode (export is for inference)."""
    model.eval()
    return ExportableModel(model, modalities, output).eval()


def example_inputs(batch: MultimodalBatch | Mapping[str, ModalityInput], modalities: Sequence[str]) -> tuple[Tensor, ...]:
    """The flat ``(data, mask, ...)`` tuple of a batch, in ``modalities`` order."""
    inputs = batch.inputs if isinstance(batch, MultimodalBatch) else batch
    missing = [m for m in modalities if m not in inputs]
    if missing:
        raise ValueError(f"example_inputs: the batch lacks modalities {missing} (it has {list(inputs)})")
    return tuple(t for m in modalities for t in (inputs[m].data, inputs[m].mask))


def export_program(model: ExportableModel, args: tuple[Tensor, ...]) -> torch.export.ExportedProgram:
    """``torch.export.export`` of an :class:`ExportableModel` at the shapes of ``args``."""
    return torch.export.export(model, args)


def export_onnx(model: ExportableModel, args: tuple[Tensor, ...], path: str | Path, opset: int = 18) -> Path:
    """Write ``model`` as ONNX (dynamo exporter) with inputs ``<modality>``,
    ``<modality>_mask`` and outputs ``logits`` or ``context``/``context_mask``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [n for m in model.modalities for n in (m, f"{m}_mask")]
    outputs = ["logits"] if model.output == "logits" else ["context", "context_mask"]
    program = torch.onnx.export(
        model, args, dynamo=True, input_names=names, output_names=outputs, opset_version=opset, verbose=False
    )
    program.save(str(path))
    return path
