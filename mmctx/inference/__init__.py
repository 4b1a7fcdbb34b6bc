"""Using a trained model outside the CLI's data modules: :func:`load` a checkpoint (or an
exported folder) as a :class:`Predictor` that captions, transcribes or classifies files,
PIL images, arrays and strings; :func:`export` a checkpoint to a folder (safetensors
weights + JSON config, tokenizer and preprocessing) that loads without unpickling anything.
The ``mmctx caption`` / ``mmctx classify`` commands are in :mod:`mmctx.inference.commands`.

No Lightning here: loading rebuilds the plain ``nn.Module`` from the checkpoint's class
paths (jsonargparse) and the inputs from its ``mmctx_data``
(:class:`~mmctx.data.inference.InputEncoder`).
"""

from __future__ import annotations

from mmctx.inference.predictor import Predictor, export, load

__all__ = ["Predictor", "export", "load"]
