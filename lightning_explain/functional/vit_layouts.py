"""Where a Vision Transformer keeps its tokens: layout detection, token-to-grid reshaping, the default token layer.

Pure functions of the model's structure (no forward pass, no Lightning import). Supported models (also as a
submodule of a wrapper such as a LightningModule; the first one found is used):

* torchvision ``VisionTransformer`` (``vit_b_16`` ...): one class token.
* timm ``VisionTransformer`` and subclasses (DeiT with a distillation token, models with register tokens, class
  token or average pooling): ``num_prefix_tokens`` prefix tokens.
* timm ``Eva`` (EVA-02): the same attributes as timm's ViT.
* Hugging Face ViT, DeiT (class and distillation token), BEiT and DINOv2 (with or without register tokens), with the
  transformers >= 5 layouts (``vit.layers``, ``dinov2.encoder.layer``), only when transformers is installed (it is an
  optional dependency; nothing here imports it).

Example:
    >>> import torchvision
    >>> vit_layout(torchvision.models.VisionTransformer(32, 8, 2, 2, 16, 32)).grid
    (4, 4)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

__all__ = [
    "SUPPORTED_VITS",
    "ViTLayout",
    "default_token_layer",
    "find_vit_layout",
    "inner_model",
    "tokens_to_grid",
    "vit_layout",
]

LayoutKind = Literal["torchvision", "timm", "hf"]

SUPPORTED_VITS = (
    "torchvision.models.VisionTransformer, timm VisionTransformer (and subclasses such as DeiT distilled, DeiT-3 or "
    "models with register tokens) and Eva (EVA-02), and Hugging Face ViT, DeiT, BEiT and DINOv2 (transformers >= 5)"
)


@dataclass(frozen=True)
class ViTLayout:
    """Where a Vision Transformer keeps its tokens and attention modules.

    Attributes:
        kind: ``"torchvision"``, ``"timm"`` or ``"hf"``.
        num_prefix_tokens: tokens before the patch tokens (class + distillation + register tokens).
        grid: the patch grid ``(gh, gw)`` of the model's configured image size.
        attention_names: dotted names (relative to the model given to :func:`vit_layout`) of the attention
            modules, in depth order.
        block_names: dotted names of the transformer blocks, in depth order.
        num_heads: attention heads per layer.
        has_class_token: token 0 is a class token (needed by class-token attention and rollout).
        pools_prefix_tokens: the classifier reads only prefix tokens (class / distillation token pooling), so the
            last block's patch tokens get zero gradient.
    """

    kind: LayoutKind
    num_prefix_tokens: int
    grid: tuple[int, int]
    attention_names: tuple[str, ...]
    block_names: tuple[str, ...]
    num_heads: int
    has_class_token: bool = True
    pools_prefix_tokens: bool = True

    @property
    def depth(self) -> int:
        """Number of transformer blocks."""
        return len(self.block_names)

    @property
    def num_patches(self) -> int:
        """``gh * gw``."""
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self) -> int:
        """Sequence length ``T = num_prefix_tokens + gh * gw``."""
        return self.num_prefix_tokens + self.num_patches


# ---------------------------------------------------------------------------------------------------------------
# Layout detection
# ---------------------------------------------------------------------------------------------------------------


def _loaded_class(module_name: str, class_name: str) -> type | None:
    """A class from an already imported module (a model of a library exists only once that library is imported)."""
    module = sys.modules.get(module_name)
    cls = getattr(module, class_name, None) if module is not None else None
    return cls if isinstance(cls, type) else None


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _torchvision_layout(vit: Any, prefix: str) -> ViTLayout:
    layers = vit.encoder.layers
    names = [name for name, _ in layers.named_children()]
    if not names:
        raise ValueError("the torchvision VisionTransformer has no encoder layers.")
    blocks = tuple(_join(prefix, f"encoder.layers.{name}") for name in names)
    side = int(vit.image_size) // int(vit.patch_size)
    first = getattr(layers, names[0]).self_attention
    return ViTLayout(
        kind="torchvision",
        num_prefix_tokens=1,
        grid=(side, side),
        attention_names=tuple(f"{b}.self_attention" for b in blocks),
        block_names=blocks,
        num_heads=int(first.num_heads),
    )


def _timm_attention_in(block: nn.Module) -> tuple[str, Any] | None:
    """The module of a timm block that owns ``fused_attn`` and an ``attn_drop`` applied to the softmax."""
    for name, module in block.named_modules():
        if hasattr(module, "fused_attn") and isinstance(getattr(module, "attn_drop", None), nn.Module):
            return name, module
    return None


def _timm_layout(vit: Any, prefix: str) -> ViTLayout:
    blocks: list[str] = []
    attentions: list[str] = []
    heads = 0
    for index, block in enumerate(vit.blocks):
        found = _timm_attention_in(block)
        block_name = _join(prefix, f"blocks.{index}")
        if found is None:
            raise ValueError(
                f"timm block {block_name!r} ({type(block).__name__}) has no attention module with `fused_attn` "
                f"and `attn_drop`; supported: {SUPPORTED_VITS}."
            )
        blocks.append(block_name)
        attentions.append(_join(block_name, found[0]))
        heads = int(found[1].num_heads)
    if not blocks:
        raise ValueError("the timm VisionTransformer has no blocks.")
    return ViTLayout(
        kind="timm",
        num_prefix_tokens=int(vit.num_prefix_tokens),
        grid=_pair(tuple(vit.patch_embed.grid_size)),
        attention_names=tuple(attentions),
        block_names=tuple(blocks),
        num_heads=heads,
        has_class_token=bool(getattr(vit, "has_class_token", getattr(vit, "cls_token", None) is not None)),
        pools_prefix_tokens=getattr(vit, "global_pool", "token") == "token",
    )


#: Hugging Face vision transformers with a class token whose blocks' ``attention`` returns ``(output, weights)``.
_HF_VITS = (
    "ViTPreTrainedModel",
    "DeiTPreTrainedModel",
    "BeitPreTrainedModel",
    "Dinov2PreTrainedModel",
    "Dinov2WithRegistersPreTrainedModel",
)
#: Attribute of the backbone inside a Hugging Face classifier.
_HF_BACKBONES = ("vit", "deit", "beit", "dinov2")


def _is_hf_vit(module: nn.Module) -> bool:
    return any(cls.__name__ in _HF_VITS and cls.__module__.startswith("transformers.") for cls in type(module).__mro__)


def _hf_layout(vit: Any, prefix: str) -> ViTLayout:
    base, base_prefix = vit, prefix
    for attr in _HF_BACKBONES:
        if isinstance(getattr(vit, attr, None), nn.Module):
            base, base_prefix = getattr(vit, attr), _join(prefix, attr)
            break
    layers, where = getattr(base, "layers", None), "layers"
    if not isinstance(layers, nn.ModuleList):
        layers, where = getattr(getattr(base, "encoder", None), "layer", None), "encoder.layer"
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        raise ValueError(
            f"{type(vit).__name__} has no `layers` (or `encoder.layer`) list of blocks with an `attention` module "
            f"returning (output, weights); supported: {SUPPORTED_VITS}."
        )
    config = base.config
    image, patch = _pair(config.image_size), _pair(config.patch_size)
    blocks = tuple(_join(base_prefix, f"{where}.{i}") for i in range(len(layers)))
    distilled = int(getattr(getattr(base, "embeddings", None), "distillation_token", None) is not None)
    registers = int(getattr(config, "num_register_tokens", 0) or 0)
    # BEiT averages the patch tokens (use_mean_pooling); DINOv2's head reads the class token and the patch mean.
    pools_all = bool(getattr(config, "use_mean_pooling", False)) or type(vit).__name__.startswith("Dinov2")
    return ViTLayout(
        kind="hf",
        num_prefix_tokens=1 + distilled + registers,
        grid=(image[0] // patch[0], image[1] // patch[1]),
        attention_names=tuple(f"{b}.attention" for b in blocks),
        block_names=blocks,
        num_heads=int(config.num_attention_heads),
        pools_prefix_tokens=not pools_all,
    )


def _layout_of(module: nn.Module, prefix: str) -> ViTLayout | None:
    tv_vit = _loaded_class("torchvision.models.vision_transformer", "VisionTransformer")
    if tv_vit is not None and isinstance(module, tv_vit):
        return _torchvision_layout(module, prefix)
    timm_vits = (
        _loaded_class("timm.models.vision_transformer", "VisionTransformer"),
        _loaded_class("timm.models.eva", "Eva"),
    )
    if any(cls is not None and isinstance(module, cls) for cls in timm_vits):
        return _timm_layout(module, prefix)
    if _is_hf_vit(module):
        return _hf_layout(module, prefix)
    return None


def vit_layout(model: nn.Module) -> ViTLayout:
    """Detect a supported Vision Transformer (the model itself or its first ViT submodule) and describe its tokens.

    Names in the layout are relative to ``model``, so a LightningModule that wraps a ViT works as it is.

    Raises:
        ValueError: no supported ViT was found (the message lists what is supported).

    Example:
        >>> import torchvision
        >>> layout = vit_layout(torchvision.models.VisionTransformer(32, 8, 2, 2, 16, 32))
        >>> layout.kind, layout.num_prefix_tokens, layout.grid, layout.attention_names[0]
        ('torchvision', 1, (4, 4), 'encoder.layers.encoder_layer_0.self_attention')
    """
    for name, module in model.named_modules():
        layout = _layout_of(module, name)
        if layout is not None:
            return layout
    raise ValueError(
        f"{type(model).__name__} is not (and does not contain) a recognised Vision Transformer; "
        f"supported: {SUPPORTED_VITS}."
    )


def inner_model(model: nn.Module) -> nn.Module:
    """The model inside wrappers (a LightningModule holding ``self.net``): descend while one child holds every
    parameter. Messages name this model's type, which is the one the user chose.

    Example:
        >>> import torchvision
        >>> wrapper = nn.Sequential(torchvision.models.resnet18())
        >>> type(inner_model(wrapper)).__name__
        'ResNet'
    """
    total = sum(p.numel() for p in model.parameters())
    while total:
        holders = [c for c in model.children() if sum(p.numel() for p in c.parameters()) == total]
        if len(holders) != 1:
            break
        model = holders[0]
    return model


def find_vit_layout(model: nn.Module) -> ViTLayout | None:
    """The model's vision-transformer layout, or None when it is not a supported ViT."""
    try:
        return vit_layout(model)
    except ValueError:
        return None


def tokens_to_grid(tokens: Tensor, layout: ViTLayout) -> Tensor:
    """Token features ``[B, T, C]`` -> feature maps ``[B, C, gh, gw]``: prefix tokens dropped, patches row-major.

    All supported models keep tokens batch-first (torchvision's encoder blocks too).

    Example:
        >>> import torch
        >>> layout = ViTLayout("timm", 5, (2, 2), ("blocks.0.attn",), ("blocks.0",), 1)
        >>> tokens_to_grid(torch.rand(3, 9, 7), layout).shape
        torch.Size([3, 7, 2, 2])
    """
    if not isinstance(tokens, Tensor) or tokens.ndim != 3:
        shape = list(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be [B, T, C] (batch first); got {shape}.")
    if tokens.shape[1] != layout.num_tokens:
        raise ValueError(
            f"got {tokens.shape[1]} tokens but the layout expects {layout.num_tokens} = {layout.num_prefix_tokens} "
            f"prefix + {layout.grid[0]}x{layout.grid[1]} patches (is the layer's output [B, T, C]?)."
        )
    patches = tokens[:, layout.num_prefix_tokens :, :]
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *layout.grid)


_PRE_NORM = {"torchvision": "ln_1", "timm": "norm1", "hf": "layernorm_before"}


def default_token_layer(model: nn.Module, layout: ViTLayout | None = None) -> str:
    """A token layer whose Grad-CAM is not identically zero.

    When the classifier reads only the class (and distillation) token, the last block's patch-token outputs never
    reach the logits (pytorch-grad-cam #363, #513): their gradient is exactly zero and Grad-CAM on the last block is
    all zeros. The default is then the output of the second-to-last block (= the input of the last block, whose
    attention carries the patch tokens into the class token). With one block only, it is that block's pre-attention
    LayerNorm. When the model pools all tokens (timm ``global_pool="avg"`` and similar), the last block is used.

    Example:
        >>> import torchvision
        >>> default_token_layer(torchvision.models.VisionTransformer(32, 8, 3, 2, 16, 32))
        'encoder.layers.encoder_layer_1'
    """
    layout = vit_layout(model) if layout is None else layout
    if not layout.pools_prefix_tokens:
        return layout.block_names[-1]
    if layout.depth >= 2:
        return layout.block_names[-2]
    name = f"{layout.block_names[0]}.{_PRE_NORM[layout.kind]}"
    if name not in dict(model.named_modules()):
        raise ValueError("no default token layer for this one-block model; pass layer='<dotted name>'.")
    return name
