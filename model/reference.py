"""The reference networks of the PTB-XL benchmark (Strodthoff et al., IEEE JBHI 2021), written
from their published descriptions: resnet1d_wang (Wang et al. 2017), xresnet1d101 (He et al.
2019, "bag of tricks") and inception1d (InceptionTime, Fawaz et al. 2020), each ending in the
benchmark's concat-pooling head.

Kernel lengths are the published ones in samples. The benchmark ran at 100 Hz, so at 500 Hz the
same kernel spans a fifth of the time.
"""
import copy

import torch
from torch import nn

from model.resnet1d import ArchitectureError, BeatClassifier

HEAD_HIDDEN = (128,)    # hidden widths of the concat-pooling head (the benchmark's lin_ftrs)

ARCHITECTURES = {
    "resnet1d_wang": {
        "network": "resnet1d_wang",
        "stem_channels": 128,        # stem conv output channels
        "stem_kernel": 7,            # stem conv length (stride 1, no pooling)
        "widths": (128, 128, 128),   # output channels of each basic block
        "strides": (1, 2, 2),        # stride of each block's first conv
        "kernels": (5, 3),           # first and second conv length inside a block
        "head_hidden": HEAD_HIDDEN,
    },
    "xresnet1d101": {
        "network": "xresnet1d",
        "stem_widths": (32, 32, 64),  # three stem convs, the first with stride 2, then max-pool
        "stem_kernel": 5,
        "width": 64,                  # bottleneck width, the same in every stage
        "expansion": 4,               # a block's output channels: width * expansion
        "blocks": (3, 4, 23, 3),      # bottleneck blocks per stage
        "strides": (1, 2, 2, 2),      # stride of each stage's first block
        "kernel_size": 5,             # middle conv length of a bottleneck
        "head_hidden": HEAD_HIDDEN,
    },
    "inception1d": {
        "network": "inception1d",
        "depth": 6,                   # inception blocks
        "filters": 32,                # output channels of each branch (4 branches concatenated)
        "bottleneck": 32,             # 1x1 bottleneck in front of the long convs
        "kernels": (39, 19, 9),       # the benchmark's 40, 20, 10, each made odd
        "residual_every": 3,          # a shortcut around each group of this many blocks
        "head_hidden": HEAD_HIDDEN,
    },
}


def reference_architecture(experiment, network):
    """A private copy of the architecture of `experiment`, which must be a `network` one."""
    arch = ARCHITECTURES.get(experiment)
    if arch is None or arch["network"] != network:
        names = [name for name, a in ARCHITECTURES.items() if a["network"] == network]
        raise ArchitectureError(f"unknown {network} experiment {experiment!r}; valid names: "
                                f"{', '.join(names)}")
    return copy.deepcopy(arch)


def checked_architecture(architecture, experiment, network):
    """`architecture` (or the named experiment's) after checking it builds a `network`."""
    arch = (copy.deepcopy(architecture) if architecture is not None
            else reference_architecture(experiment, network))
    if arch.get("network") != network:
        raise ArchitectureError(f"architecture is a {arch.get('network')!r} network, "
                                f"not {network!r}")
    missing = sorted(set(ARCHITECTURES[experiment_of(network)]) - set(arch))
    if missing:
        raise ArchitectureError(f"architecture lacks {', '.join(missing)}")
    return arch


def experiment_of(network):
    """The first experiment name whose architecture is a `network` (the family's template)."""
    return next(name for name, arch in ARCHITECTURES.items() if arch["network"] == network)


def conv_bn(in_channels, out_channels, kernel_size, stride=1, relu=True):
    """Conv (no bias, 'same' padding for odd kernels) -> BN [-> ReLU]."""
    layers = [nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride,
                        padding=(kernel_size - 1) // 2, bias=False),
              nn.BatchNorm1d(out_channels)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


def benchmark_init(module):
    """The benchmark's initialisation: Kaiming-normal conv and linear weights, zero biases,
    every BatchNorm weight 1 and bias 0."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv1d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm1d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


class ConcatPoolHead(nn.Module):
    """Max and average over time concatenated (2 x channels), then for each layer
    BN -> dropout -> linear, with ReLU between layers (create_head1d of the benchmark)."""

    def __init__(self, channels, num_classes, hidden=HEAD_HIDDEN, dropouts=(0.25, 0.5)):
        super().__init__()
        sizes = [2 * channels, *hidden, num_classes]
        if len(dropouts) != len(sizes) - 1:
            raise ArchitectureError(f"the head needs {len(sizes) - 1} dropout rates, "
                                    f"got {len(dropouts)}")
        layers = []
        for i, (n_in, n_out, p) in enumerate(zip(sizes, sizes[1:], dropouts, strict=False)):
            layers += [nn.BatchNorm1d(n_in), nn.Dropout(p), nn.Linear(n_in, n_out)]
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        pooled = torch.cat([x.amax(dim=2), x.mean(dim=2)], dim=1)
        return self.layers(pooled)


def head_dropouts(dropout_rate, hidden):
    """The benchmark's expansion of one rate: half of it before every layer but the last."""
    return (dropout_rate / 2,) * len(hidden) + (dropout_rate,)


class ReferenceNetwork(BeatClassifier):
    """Config, length check and head shared by the reference networks; subclasses build the
    body in `build_body(arch, in_channels)`, returning its output channels."""

    NETWORK = None
    DEFAULT_EXPERIMENT = None

    def __init__(self, num_classes, in_channels=12, experiment=None, dropout_rate=0.5,
                 input_length=None, architecture=None):
        super().__init__()
        experiment = experiment or self.DEFAULT_EXPERIMENT
        arch = checked_architecture(architecture, experiment, self.NETWORK)
        self.config = {"experiment": experiment, "num_classes": int(num_classes),
                       "in_channels": int(in_channels), "input_length": input_length,
                       "dropout_rate": float(dropout_rate), "architecture": arch}
        self.min_length = self.downsampling_factor(arch)
        if input_length is not None and input_length < self.min_length:
            raise ArchitectureError(f"input_length {input_length} is shorter than the "
                                    f"network's downsampling factor {self.min_length}")
        channels = self.build_body(arch, int(in_channels))
        hidden = tuple(arch["head_hidden"])
        self.head = ConcatPoolHead(channels, num_classes, hidden,
                                   head_dropouts(dropout_rate, hidden))
        benchmark_init(self)

    @staticmethod
    def downsampling_factor(arch):
        factor = 1
        for stride in arch.get("strides", ()):
            factor *= stride
        return factor

    def build_body(self, arch, in_channels):
        raise NotImplementedError

    def features(self, x):
        raise NotImplementedError

    def inference_copy(self):
        """An eval-mode copy with frozen parameters, for input-gradient work (BatchNorm is
        not folded: these networks are explained less often than trained)."""
        return copy.deepcopy(self).eval().requires_grad_(False)

    def forward(self, x):
        self.check_input(x)
        return self.head(self.features(x))


# ----------------------------------------------------------------------------- resnet1d_wang

class BasicBlock1d(nn.Module):
    """conv k5 (stride) -> BN -> ReLU -> conv k3 -> BN, + shortcut (1x1 conv + BN when the
    shape changes), ReLU."""

    def __init__(self, in_channels, out_channels, stride, kernels):
        super().__init__()
        self.conv1 = conv_bn(in_channels, out_channels, kernels[0], stride)
        self.conv2 = conv_bn(out_channels, out_channels, kernels[1], relu=False)
        self.shortcut = (conv_bn(in_channels, out_channels, 1, stride, relu=False)
                         if stride != 1 or in_channels != out_channels else nn.Identity())
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet1dWang(ReferenceNetwork):
    """resnet1d_wang: a k7 stem and three basic blocks of 128 channels, strides 1, 2, 2."""

    NETWORK = "resnet1d_wang"
    DEFAULT_EXPERIMENT = "resnet1d_wang"

    def build_body(self, arch, in_channels):
        self.stem = conv_bn(in_channels, arch["stem_channels"], arch["stem_kernel"])
        blocks, channels = [], arch["stem_channels"]
        for width, stride in zip(arch["widths"], arch["strides"], strict=True):
            blocks.append(BasicBlock1d(channels, width, stride, arch["kernels"]))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        return channels

    def features(self, x):
        return self.blocks(self.stem(x))


# ----------------------------------------------------------------------------- xresnet1d

class Bottleneck1d(nn.Module):
    """1x1 -> k (stride) -> 1x1 (x expansion, no ReLU), + identity path (average pool when
    strided, 1x1 conv + BN when the channels change), ReLU."""

    def __init__(self, in_channels, width, out_channels, stride, kernel_size):
        super().__init__()
        self.convs = nn.Sequential(conv_bn(in_channels, width, 1),
                                   conv_bn(width, width, kernel_size, stride),
                                   conv_bn(width, out_channels, 1, relu=False))
        identity = [nn.AvgPool1d(stride, ceil_mode=True)] if stride != 1 else []
        if in_channels != out_channels:
            identity.append(conv_bn(in_channels, out_channels, 1, relu=False))
        self.identity = nn.Sequential(*identity)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.convs(x) + self.identity(x))


class XResNet1d(ReferenceNetwork):
    """xresnet1d: a three-conv stem with stride 2 and a max-pool, then bottleneck stages."""

    NETWORK = "xresnet1d"
    DEFAULT_EXPERIMENT = "xresnet1d101"

    @staticmethod
    def downsampling_factor(arch):
        return 4 * ReferenceNetwork.downsampling_factor(arch)   # stem stride 2, max-pool 2

    def build_body(self, arch, in_channels):
        widths, k = (in_channels, *arch["stem_widths"]), arch["stem_kernel"]
        self.stem = nn.Sequential(
            *(conv_bn(a, b, k, stride=2 if i == 0 else 1)
              for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False))),
            nn.MaxPool1d(3, stride=2, padding=1))
        blocks, channels = [], widths[-1]
        out_channels = arch["width"] * arch["expansion"]
        for count, stride in zip(arch["blocks"], arch["strides"], strict=True):
            for i in range(count):
                blocks.append(Bottleneck1d(channels, arch["width"], out_channels,
                                           stride if i == 0 else 1, arch["kernel_size"]))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        return channels

    def features(self, x):
        return self.blocks(self.stem(x))


# ----------------------------------------------------------------------------- inception1d

class InceptionBlock1d(nn.Module):
    """1x1 bottleneck -> parallel long convs, plus max-pool -> 1x1 on the input; concatenated
    -> BN -> ReLU. A block that closes a group also adds the shortcut from the group's input:
    ReLU(out + BN(1x1 conv(group input)))."""

    def __init__(self, in_channels, filters, bottleneck, kernels, group_channels=None):
        super().__init__()
        out_channels = filters * (len(kernels) + 1)
        self.bottleneck = nn.Conv1d(in_channels, bottleneck, 1, bias=False)
        self.convs = nn.ModuleList(nn.Conv1d(bottleneck, filters, k, padding=(k - 1) // 2,
                                             bias=False) for k in kernels)
        self.pool_branch = nn.Sequential(nn.MaxPool1d(3, stride=1, padding=1),
                                         nn.Conv1d(in_channels, filters, 1, bias=False))
        self.bn_relu = nn.Sequential(nn.BatchNorm1d(out_channels), nn.ReLU())
        self.shortcut = (conv_bn(group_channels, out_channels, 1, relu=False)
                         if group_channels is not None else None)

    def forward(self, x, group_input=None):
        bottled = self.bottleneck(x)
        y = self.bn_relu(torch.cat([conv(bottled) for conv in self.convs]
                                   + [self.pool_branch(x)], dim=1))
        if self.shortcut is None:
            return y
        return torch.relu(y + self.shortcut(group_input))


class Inception1d(ReferenceNetwork):
    """inception1d: six inception blocks without striding, a residual shortcut around each
    group of three."""

    NETWORK = "inception1d"
    DEFAULT_EXPERIMENT = "inception1d"

    def build_body(self, arch, in_channels):
        channels = group_channels = in_channels
        out_channels = arch["filters"] * (len(arch["kernels"]) + 1)
        blocks = []
        for d in range(arch["depth"]):
            closes_group = (d + 1) % arch["residual_every"] == 0
            blocks.append(InceptionBlock1d(channels, arch["filters"], arch["bottleneck"],
                                           arch["kernels"],
                                           group_channels if closes_group else None))
            channels = out_channels
            if closes_group:
                group_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        return channels

    def features(self, x):
        group_input = x
        for block in self.blocks:
            x = block(x, group_input)
            if block.shortcut is not None:
                group_input = x
        return x


NETWORK_CLASSES = {cls.NETWORK: cls for cls in (ResNet1dWang, XResNet1d, Inception1d)}
REFERENCE_NETWORKS = {name: NETWORK_CLASSES[arch["network"]]
                      for name, arch in ARCHITECTURES.items()}
