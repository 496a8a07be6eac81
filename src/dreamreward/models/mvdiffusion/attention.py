"""MVDream's multi-view self-attention as a diffusers attention processor.

MVDream changes one thing in the SD UNet's transformer blocks: the self-attention (``attn1``) of
each view attends to the tokens of *all* views of the same object, so the views agree on one
object. Cross-attention (``attn2``) and the feed-forward layers stay per view. The batch is
object-major and view-minor, so the V views of object b are rows ``b*V .. b*V+V-1``; the
processor reshapes ``(B*V, L, C) -> (B, V*L, C)``, runs the stock SDPA attention, and reshapes
back. Nothing else differs, so the stock processor does the arithmetic (residuals, norms, SDPA).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


class MultiViewAttnProcessor:
    """Self-attention across the ``num_views`` views of each object (install on ``attn1`` only).

    Args:
        num_views: views per object V (MVDream: 4).
    """

    def __init__(self, num_views: int) -> None:
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        self.num_views = num_views
        self._attend = AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """(B*V, L, C) -> (B*V, L, C): each view's queries attend to all V*L keys of its object."""
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError(
                "MultiViewAttnProcessor is for self-attention (attn1) without a mask; "
                "keep the stock processor on cross-attention"
            )
        if hidden_states.ndim != 3:
            raise ValueError(f"expected (B*V, L, C) tokens, got {tuple(hidden_states.shape)}")
        rows, length, channels = hidden_states.shape
        v = self.num_views
        if rows % v:
            raise ValueError(
                f"a batch of {rows} images is not whole groups of {v} views "
                "(batches are object-major: V consecutive rows per object)"
            )
        grouped = hidden_states.reshape(rows // v, v * length, channels)
        out = self._attend(attn, grouped, temb=temb)
        return out.reshape(rows, length, channels)


def install_multiview_attention(unet: torch.nn.Module, num_views: int) -> None:
    """Put :class:`MultiViewAttnProcessor` on every ``attn1`` and SDPA on every other attention.

    With ``num_views=1`` the model is the plain per-image UNet again.
    """
    processors: dict[str, Any] = {}
    for name in unet.attn_processors:
        is_self = name.endswith("attn1.processor")
        processors[name] = MultiViewAttnProcessor(num_views) if is_self else AttnProcessor2_0()
    if not any(name.endswith("attn1.processor") for name in processors):
        raise ValueError("the UNet has no transformer self-attention (attn1) to make multi-view")
    unet.set_attn_processor(processors)


def multiview_num_views(unet: torch.nn.Module) -> int | None:
    """The V of the multi-view processors when every attn1 has one (else None)."""
    self_attention = [p for k, p in unet.attn_processors.items() if k.endswith("attn1.processor")]
    found = {p.num_views if isinstance(p, MultiViewAttnProcessor) else None for p in self_attention}
    # a partly replaced set (e.g. after set_attn_processor on some blocks) counts as not installed
    return found.pop() if len(found) == 1 else None
