"""Gated attention MIL: the class-specific (CLAM multi-branch) option and the default contract."""

from __future__ import annotations

import pytest
import torch

from histo_net.models.mil import GatedAttentionMIL, pad_bags

#: the default path's state-dict layout: a bundle contract (existing model.pt files hold these)
DEFAULT_KEYS_AND_SHAPES = {
    "embed.0.weight": (16, 8), "embed.0.bias": (16,),
    "attn_v.0.weight": (4, 16), "attn_v.0.bias": (4,),
    "attn_u.0.weight": (4, 16), "attn_u.0.bias": (4,),
    "attn_w.weight": (1, 4), "attn_w.bias": (1,),
    "classifier.weight": (3, 16), "classifier.bias": (3,),
}


def _model(class_specific: bool, seed: int = 0) -> GatedAttentionMIL:
    torch.manual_seed(seed)
    return GatedAttentionMIL(in_dim=8, num_classes=3, hidden_dim=16, attn_dim=4, dropout=0.0,
                             class_specific=class_specific).eval()


def test_default_path_layout_and_kwargs_unchanged() -> None:
    model = _model(False)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == DEFAULT_KEYS_AND_SHAPES
    assert "class_specific" not in model.init_kwargs  # old bundles' mil_kwargs rebuild it
    rebuilt = GatedAttentionMIL(**model.init_kwargs)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x, mask = pad_bags([torch.randn(4, 8), torch.randn(6, 8)])
    assert model.attention(x, mask).shape == (2, 6)


def test_class_specific_shapes_masks_and_padding_invariance() -> None:
    model = _model(True)
    assert model.init_kwargs["class_specific"] is True
    assert tuple(model.attn_w.weight.shape) == (3, 4)
    rebuilt = GatedAttentionMIL(**model.init_kwargs)
    rebuilt.load_state_dict(model.state_dict(), strict=True)  # kwargs rebuild the same layout
    bag = torch.randn(1, 5, 8)
    padded = torch.cat([bag, torch.full((1, 3, 8), float("nan"))], dim=1)  # garbage padding
    mask = torch.tensor([[True] * 5 + [False] * 3])
    logits_a, attn_a = model.forward_with_attention(bag, torch.ones(1, 5, dtype=torch.bool))
    logits_b, attn_b = model.forward_with_attention(padded, mask)
    assert logits_a.shape == (1, 3) and attn_a.shape == (1, 3, 5) and attn_b.shape == (1, 3, 8)
    torch.testing.assert_close(logits_a, logits_b)
    torch.testing.assert_close(attn_a, attn_b[..., :5])
    assert torch.all(attn_b[..., 5:] == 0)
    torch.testing.assert_close(attn_b.sum(-1), torch.ones(1, 3))
    x, m = pad_bags([torch.randn(3, 8), torch.randn(7, 8)])
    logits, attn = model.forward_with_attention(x, m)
    torch.testing.assert_close(logits, model(x, m))
    assert attn.shape == (2, 3, 7) and torch.all(attn[0, :, 3:] == 0)


def test_each_class_logit_uses_only_its_own_branch() -> None:
    """Changing class 1's attention branch moves class 1's logit and leaves class 0's alone."""
    model = _model(True)
    x, mask = pad_bags([torch.randn(6, 8), torch.randn(9, 8)])
    before, attn_before = model.forward_with_attention(x, mask)
    with torch.no_grad():
        model.attn_w.weight[1] += torch.randn(4) * 3.0
    after, attn_after = model.forward_with_attention(x, mask)
    torch.testing.assert_close(after[:, 0], before[:, 0])
    torch.testing.assert_close(after[:, 2], before[:, 2])
    torch.testing.assert_close(attn_after[:, 0], attn_before[:, 0])
    assert not torch.allclose(after[:, 1], before[:, 1])
    assert not torch.allclose(attn_after[:, 1], attn_before[:, 1])


def test_class_specific_logits_are_per_class_heads_on_per_class_pools() -> None:
    """logit_c = w_c . (sum_n a_cn h_n) + b_c, computed independently of the module."""
    model = _model(True)
    bag = torch.randn(1, 7, 8)
    mask = torch.ones(1, 7, dtype=torch.bool)
    logits, attn = model.forward_with_attention(bag, mask)
    h = model.embed(bag)[0]  # (N,H)
    for c in range(3):
        pooled = attn[0, c] @ h  # (H,)
        expect = pooled @ model.classifier.weight[c] + model.classifier.bias[c]
        torch.testing.assert_close(logits[0, c], expect)


def test_class_specific_trains_and_rejects_empty_bags() -> None:
    model = _model(True).train()
    x, mask = pad_bags([torch.randn(4, 8), torch.randn(2, 8)])
    loss = torch.nn.functional.cross_entropy(model(x, mask), torch.tensor([0, 2]))
    loss.backward()
    assert model.attn_w.weight.grad is not None and torch.isfinite(model.attn_w.weight.grad).all()
    with pytest.raises(ValueError, match="at least one real tile"):
        model(torch.randn(1, 2, 8), torch.zeros(1, 2, dtype=torch.bool))
