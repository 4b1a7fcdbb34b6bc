"""Lightning callbacks the fault tests inject into `mmctx fit` subprocesses by class path
(`fault_callbacks.SigkillAt`): this folder is put on the child's PYTHONPATH. Not a test module."""

from __future__ import annotations

import json
import os
import signal

import lightning as L


class SigkillAt(L.Callback):
    """Kill this process (SIGKILL: no cleanup, no final checkpoint) after training step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class IdLog(L.Callback):
    """Append each training step's sample ids to a JSONL file (flushed to disk before a kill)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"step": trainer.global_step + 1, "ids": list(batch.ids)}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
