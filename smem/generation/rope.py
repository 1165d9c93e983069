"""Moving cached keys to other positions by re-rotating them (RoPE), without a forward pass.

Rotary position embeddings rotate each pair of key dimensions by an angle proportional to the
token's position, `position × inv_freq`, and rotations compose: a key cached at position p,
rotated once more by Δ × inv_freq, is exactly the key the same hidden state would have at
position p + Δ. So when memory lines are cut from or read into the middle of the cache
(`smem.generation.swap.SpliceContext`), the entries after them can slide to their new
positions with one element-wise product instead of being re-read. Values carry no position and
stay as they are. (The same trick shifts the context window of llama.cpp and StreamingLLM.)

This holds only where the angle is linear in the position with fixed frequencies: the
"default", "linear", "llama3" and "yarn" RoPE types of transformers (Qwen2.5 and Qwen3 use
"default"). Types whose frequencies depend on the sequence length ("dynamic", "longrope") are
refused: `KeyRotation.from_model` returns None and the caller keeps exact swaps.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

LINEAR_ROPE_TYPES = frozenset({"default", "linear", "llama3", "yarn"})
"""transformers' RoPE types with position-independent `inv_freq` (modeling_rope_utils)."""


class KeyRotation:
    """Re-rotates post-RoPE keys by a position offset, in HF's rotate-half layout."""

    def __init__(self, inv_freq: torch.Tensor) -> None:
        self.inv_freq = inv_freq.detach().to(torch.float64)
        self.rotary_dims = 2 * len(inv_freq)
        """Leading head dimensions that carry position (all of them for Qwen; fewer with partial RoPE)."""

    @classmethod
    def from_model(cls, model: Any) -> Optional["KeyRotation"]:
        """The rotation of `model`'s rotary embedding, or None when it has none or its angles
        are not linear in the position."""
        for module in model.modules():
            inv_freq = getattr(module, "inv_freq", None)
            if isinstance(inv_freq, torch.Tensor) and hasattr(module, "rope_type"):
                return cls(inv_freq) if module.rope_type in LINEAR_ROPE_TYPES else None
        return None

    def __call__(self, keys: torch.Tensor, shift: int) -> torch.Tensor:
        """`keys` (batch, heads, tokens, head_dim) as if each token sat `shift` positions later."""
        if shift == 0 or keys.shape[-2] == 0:
            return keys
        # float64 angles: shift × inv_freq must not lose the low frequencies' precision.
        angles = (shift * self.inv_freq).to(keys.device)
        angles = torch.cat([angles, angles])
        cos, sin = angles.cos().float(), angles.sin().float()
        rotated, rest = keys[..., : self.rotary_dims].float(), keys[..., self.rotary_dims :]
        half = self.rotary_dims // 2
        turned = torch.cat([-rotated[..., half:], rotated[..., :half]], dim=-1)  # HF's rotate_half
        out = (rotated * cos + turned * sin).to(keys.dtype)
        return torch.cat([out, rest], dim=-1) if rest.shape[-1] else out
