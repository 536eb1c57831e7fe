"""The deep families, where inits differ most: a plain convolutional stack, the CIFAR ResNet (with or without
normalization) and a small Vision Transformer, each with its depth and width as parameters and shape-adaptive to
8x8, 28x28 and 32x32 inputs. Dropout is off; names follow the papers' so rules can reach a layer (`*.bn2.weight`,
`*.conv2.weight`: the residual branch's last layers)."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from initbench.errors import InitbenchError
from initbench.models.build import register_model
from initbench.models.zoo import activation_module
from initbench.registry import check_size


def _image(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise InitbenchError(f"model '{name}' needs image inputs (C, H, W), got shape {tuple(input_shape)}")
    c, h, w = input_shape
    return c, h, w


@register_model("convnet")
class ConvNet(nn.Module):
    """A plain VGG-style stack of 3x3 convolutions without normalization, global average pool, linear readout.

    `depth` convolutions of `channels` channels, each followed by the activation, with up to three 2x2 max-pools
    spread evenly through the stack.

    Parameters: C*9*in + C (first), (depth-1)*(9*C*C + C), C*classes + classes.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, depth: int = 8, channels: int = 32,
                 activation: str = "relu") -> None:
        super().__init__()
        c, h, w = _image("convnet", input_shape)
        depth, channels = check_size("convnet", "depth", depth), check_size("convnet", "channels", channels)
        make_act, self.nonlinearity = activation_module("convnet", activation)
        self.negative_slope = 0.01
        pools = min(3, depth, (min(h, w)).bit_length() - 1)  # 8x8 -> 1x1 after three
        after = {round(depth * (k + 1) / pools) for k in range(pools)} if pools else set()
        layers: list[tuple[str, nn.Module]] = []
        for i in range(1, depth + 1):
            layers += [(f"conv{i}", nn.Conv2d(c if i == 1 else channels, channels, 3, padding=1)),
                       (f"act{i}", make_act())]
            if i in after:
                layers.append((f"pool{i}", nn.MaxPool2d(2)))
        self.features = nn.Sequential(OrderedDict(layers))
        self.out = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x).mean((2, 3)))


class BasicBlock(nn.Module):
    """conv1-bn1-relu-conv2-bn2, plus the shortcut (identity, or option A's subsample and zero channels), relu."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not norm)
        self.bn1 = nn.BatchNorm2d(c_out) if norm else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=not norm)
        self.bn2 = nn.BatchNorm2d(c_out) if norm else nn.Identity()
        self.stride, self.extra = stride, c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.extra:  # option A (He et al. 2016, CIFAR): the new channels start at zero, no parameters
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra))
        return F.relu(out + shortcut)


@register_model("resnet")
class ResNet(nn.Module):
    """The CIFAR ResNet of He et al. 2016 (depth 6n+2), with BatchNorm or without it (norm=none).

    A 3x3 stem of `width` channels, three stages of n basic blocks at width, 2x width and 4x width (stride 2 into
    the last two, option-A shortcuts), global average pool, linear readout. `norm=none` drops the BatchNorm layers
    (the Fixup / SkipInit setting; convolutions then have biases). `resnet(depth=20)` has 0.27 M parameters on
    CIFAR-10.
    """

    nonlinearity = "relu"

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, depth: int = 20, width: int = 16,
                 norm: str = "batch") -> None:
        super().__init__()
        c, _, _ = _image("resnet", input_shape)
        depth, width = check_size("resnet", "depth", depth), check_size("resnet", "width", width)
        if depth < 8 or (depth - 2) % 6:
            raise InitbenchError(f"model 'resnet': depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110), "
                                 f"got {depth}")
        norm = "none" if norm is None else norm  # `norm=none` in a spec reads as YAML's null
        if norm not in ("batch", "none"):
            raise InitbenchError(f"model 'resnet': norm must be batch or none, got {norm!r}")
        use_norm, n = norm == "batch", (depth - 2) // 6
        self.conv1 = nn.Conv2d(c, width, 3, padding=1, bias=not use_norm)
        self.bn1 = nn.BatchNorm2d(width) if use_norm else nn.Identity()
        stages, c_in = [], width
        for s, c_out in enumerate((width, 2 * width, 4 * width)):
            blocks = [BasicBlock(c_in if b == 0 else c_out, c_out, 2 if s and b == 0 else 1, use_norm)
                      for b in range(n)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stages(F.relu(self.bn1(self.conv1(x)))).mean((2, 3)))


class EncoderBlock(nn.Module):
    """Pre-norm Transformer block: x + attention(norm1(x)), then x + mlp(norm2(x)) (GELU, 4x width)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


@register_model("vit")
class ViT(nn.Module):
    """A small Vision Transformer (nn.MultiheadAttention and LayerNorm) on non-overlapping patches.

    `patch` x `patch` patches embedded by a strided convolution, a class token and learned positions (embeddings
    the walk knows), `depth` pre-norm blocks of `heads`-head nn.MultiheadAttention with LayerNorm, a final LayerNorm
    and a linear head on the class token. The default patch is 2 below 16x16 pixels, else 4 (8x8 -> 16 patches,
    28x28 -> 49, 32x32 -> 64).
    """

    nonlinearity = "gelu"

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, depth: int = 4, width: int = 64,
                 heads: int = 4, patch: int | None = None) -> None:
        super().__init__()
        c, h, w = _image("vit", input_shape)
        depth, width, heads = (check_size("vit", k, v) for k, v in (("depth", depth), ("width", width),
                                                                      ("heads", heads)))
        patch = check_size("vit", "patch", patch) if patch is not None else (2 if min(h, w) < 16 else 4)
        if h % patch or w % patch:
            raise InitbenchError(f"model 'vit': patch {patch} does not divide the {h}x{w} images")
        if width % heads:
            raise InitbenchError(f"model 'vit': width {width} is not a multiple of heads {heads}")
        tokens = (h // patch) * (w // patch) + 1
        self.patch_embed = nn.Conv2d(c, width, patch, stride=patch)
        self.cls_token = nn.Embedding(1, width)
        self.pos_embed = nn.Embedding(tokens, width)
        self.blocks = nn.Sequential(*[EncoderBlock(width, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)
        self.register_buffer("positions", torch.arange(tokens), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.weight.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed(self.positions)
        return self.head(self.norm(self.blocks(x))[:, 0])
