"""Residual 1D CNN for 12-lead ECG beats, after antonior92/automatic-ecg-diagnosis.

The network is a list of numbers (``EXPERIMENTS``) plus one block type (``ResBlock1d``): a stem
conv with stride and a max-pool shortens the beat four-fold, then stages of residual blocks
halve it further while widening the channels; global pooling and dropout feed one Linear head.
Variants are flags on the same blocks: ``channel_attention`` adds squeeze-and-excitation
(Hu et al. 2018) to every block, ``multi_scale`` replaces a block's first conv by parallel convs
of several kernel lengths whose outputs are concatenated.

``ca_ms_v2`` adds two ideas aimed at beats. A lead gate reweights the input leads per beat:
left-ventricular remodeling shows as voltage and repolarisation changes in particular leads
(the Sokolow-Lyon and Cornell criteria read V1, V5/V6 and aVL), and an explicit per-lead weight
both encodes that prior and can be read off (``ResNet1D.lead_weights``). Attention pooling
replaces the global average: the evidence sits in the QRS complex and ST-T segment, and
averaging over the whole window, isoelectric baseline included, dilutes it.
"""
import copy

import torch
from torch import nn

# Shared by every experiment; the experiments below change only the flags that differ.
BASELINE = {
    "stem_channels": 32,          # stem conv output channels
    "stem_kernel": 15,            # stem conv length in samples (30 ms at 500 Hz)
    "stem_stride": 2,             # stem conv stride
    "stem_pool": 2,               # max-pool after the stem: the stages see T/4 samples
    "widths": (32, 64, 96, 128),  # output channels of each stage
    "blocks": (1, 2, 2, 1),       # residual blocks per stage
    "strides": (1, 2, 2, 2),      # stride of each stage's first block
    "kernel_size": 7,             # conv length inside the blocks
    "multi_scale": None,          # kernel lengths of parallel first convs, or None
    "channel_attention": False,   # squeeze-and-excitation in every block
    "se_reduction": 8,            # SE bottleneck: channels // se_reduction (at least 4)
    "lead_gate": False,           # per-beat reweighting of the input leads
    "pooling": "avg",             # "avg" or "attention" over time before the head
    "attention_hidden": 32,       # hidden units of the attention-pooling scorer
    "stem_init_scale": 1.0,       # factor on the stem conv's initial weights (see ResNet1D)
}

EXPERIMENTS = {
    "baseline": dict(BASELINE),
    "ca": dict(BASELINE, channel_attention=True),
    "ms": dict(BASELINE, multi_scale=(3, 7, 15)),
    "ca_ms": dict(BASELINE, channel_attention=True, multi_scale=(3, 7, 15)),
    "ca_ms_v2": dict(BASELINE, channel_attention=True, multi_scale=(3, 7, 15),
                     lead_gate=True, pooling="attention", stem_init_scale=0.1),
}


class ArchitectureError(ValueError):
    """An unknown experiment name or an inconsistent architecture dict."""


def experiment_architecture(experiment):
    """A private copy of the architecture dict of a named experiment."""
    if experiment not in EXPERIMENTS:
        raise ArchitectureError(f"unknown experiment {experiment!r}; "
                                f"valid names: {', '.join(EXPERIMENTS)}")
    return copy.deepcopy(EXPERIMENTS[experiment])


def check_architecture(arch):
    """Raise ArchitectureError naming the first key of `arch` that cannot build a network."""
    missing = sorted(set(BASELINE) - set(arch) - {"stem_init_scale"})  # init only
    if missing:
        raise ArchitectureError(f"architecture lacks {', '.join(missing)}")
    stages = {name: len(arch[name]) for name in ("widths", "blocks", "strides")}
    if len(set(stages.values())) != 1:
        raise ArchitectureError(f"widths, blocks and strides need one entry per stage, "
                                f"got {stages}")
    kernels = [arch["stem_kernel"], arch["kernel_size"], *(arch["multi_scale"] or ())]
    if any(k % 2 == 0 or k < 1 for k in kernels):
        raise ArchitectureError(f"kernel lengths must be odd and positive, got {kernels}")
    if arch["pooling"] not in ("avg", "attention"):
        raise ArchitectureError(f"pooling must be 'avg' or 'attention', got {arch['pooling']!r}")


def downsampling_factor(arch):
    """How many input samples one time step of the last stage covers."""
    factor = arch["stem_stride"] * arch["stem_pool"]
    for stride in arch["strides"]:
        factor *= stride
    return factor


def branch_widths(channels, parts):
    """`channels` split into `parts` near-equal widths, for concatenated parallel convs."""
    return [channels // parts + (1 if i < channels % parts else 0) for i in range(parts)]


class MultiScaleConv1d(nn.Module):
    """Parallel convs of several kernel lengths, outputs concatenated along channels."""

    def __init__(self, in_channels, out_channels, kernel_sizes, stride):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv1d(in_channels, width, k, stride=stride, padding=k // 2, bias=False)
            for width, k in zip(branch_widths(out_channels, len(kernel_sizes)), kernel_sizes,
                                strict=True))

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class SqueezeExcite1d(nn.Module):
    """Channel attention: scale each channel by a gate computed from its time average."""

    def __init__(self, channels, reduction):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.gate = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=False),
                                  nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x):
        return x * self.gate(x.mean(dim=2)).unsqueeze(2)


class LeadGate(nn.Module):
    """Per-beat lead weights in (0, 2), exactly 1 at initialisation.

    Leads are standardised, so their plain time average carries no information; each lead is
    instead summarised by the mean rectified response of its own learned filter (a depthwise
    conv), and a small MLP across leads turns the 12 summaries into 12 weights.
    """

    def __init__(self, leads, kernel_size=15):
        super().__init__()
        hidden = max(2, leads // 2)
        self.describe = nn.Conv1d(leads, leads, kernel_size, padding=kernel_size // 2, groups=leads)
        self.mix = nn.Sequential(nn.Linear(leads, hidden), nn.ReLU(inplace=False),
                                 nn.Linear(hidden, leads))
        # Zero last layer: the gated model starts as the ungated one and learns away from it.
        nn.init.zeros_(self.mix[-1].weight)
        nn.init.zeros_(self.mix[-1].bias)

    def weights(self, x):
        summary = torch.relu(self.describe(x)).mean(dim=2)
        return 2 * torch.sigmoid(self.mix(summary))

    def forward(self, x):
        return x * self.weights(x).unsqueeze(2)


class AttentionPool1d(nn.Module):
    """Weighted average over time, weights from a softmax over a small MLP score per step."""

    def __init__(self, channels, hidden):
        super().__init__()
        self.score = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.Tanh(),
                                   nn.Conv1d(hidden, 1, 1))

    def forward(self, x):
        weights = torch.softmax(self.score(x), dim=2)
        return (x * weights).sum(dim=2)


class ResBlock1d(nn.Module):
    """conv-bn-relu-conv-bn [-SE] plus a skip (max-pool + 1x1 conv if the shape changes), relu."""

    def __init__(self, in_channels, out_channels, stride, kernel_size, multi_scale=None,
                 channel_attention=False, se_reduction=8):
        super().__init__()
        if multi_scale:
            self.conv1 = MultiScaleConv1d(in_channels, out_channels, multi_scale, stride)
        else:
            self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride,
                                   padding=kernel_size // 2, bias=False)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size,
                               padding=kernel_size // 2, bias=False)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.se = (SqueezeExcite1d(out_channels, se_reduction) if channel_attention
                   else nn.Identity())
        skip = []
        if stride > 1:
            # ceil_mode matches the length of a strided conv with padding k // 2 on odd lengths.
            skip.append(nn.MaxPool1d(stride, ceil_mode=True))
        if in_channels != out_channels:
            skip += [nn.Conv1d(in_channels, out_channels, 1, bias=False),
                     nn.BatchNorm1d(out_channels)]
        self.skip = nn.Sequential(*skip)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.se(self.bn2(self.conv2(y)))
        return self.relu(y + self.skip(x))


def fold_batchnorm(conv, bn, out_channels=slice(None)):
    """Change `conv` in place so that it alone computes `bn`(conv(x)) in eval mode, for the
    channels `out_channels` of bn: weight * g, bias (b - running mean) * g + beta, with
    g = bn weight / sqrt(running var + eps)."""
    scale = bn.weight[out_channels] / torch.sqrt(bn.running_var[out_channels] + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
    conv.weight.mul_(scale.view(-1, *([1] * (conv.weight.dim() - 1))))
    conv.bias = nn.Parameter((bias - bn.running_mean[out_channels]) * scale
                             + bn.bias[out_channels])


def conv_bn_pairs(model):
    """(parent module, conv name, bn name) for every BatchNorm1d of a ResNet1D that directly
    follows a conv (a MultiScaleConv1d counts as one conv)."""
    pairs = [(model.stem, "0", "1")]
    for block in model.blocks:
        pairs += [(block, "conv1", "bn1"), (block, "conv2", "bn2")]
        names = [name for name, _ in block.skip.named_children()]
        pairs += [(block.skip, a, b) for a, b in zip(names, names[1:], strict=False)
                  if isinstance(getattr(block.skip, a), nn.Conv1d)
                  and isinstance(getattr(block.skip, b), nn.BatchNorm1d)]
    return pairs


class BeatClassifier(nn.Module):
    """What every network of this package shares: beats (B, leads, T) -> logits (B, classes).

    Subclasses set ``self.config`` (experiment, num_classes, in_channels, input_length,
    dropout_rate, architecture) and ``self.min_length``, keep their residual or inception
    blocks in ``self.blocks`` (Grad-CAM explains the last) and their classifier in
    ``self.head``; ``features(x)`` is the encoder's pooled output that the head reads.
    """

    def check_input(self, x):
        in_channels, length = self.config["in_channels"], self.config["input_length"]
        if x.dim() != 3 or x.shape[1] != in_channels:
            raise ValueError(f"expected beats of shape (batch, {in_channels}, time), "
                             f"got {tuple(x.shape)}")
        if length is not None and x.shape[2] != length:
            raise ValueError(f"model was built for beats of {length} samples, got {x.shape[2]}")
        if x.shape[2] < self.min_length:
            raise ValueError(f"beats need at least {self.min_length} samples, got {x.shape[2]}")

    def lead_weights(self, x):
        """Per-beat input lead weights (B, in_channels); all ones for models without a gate."""
        self.check_input(x)
        return x.new_ones(x.shape[:2])


class ResNet1D(BeatClassifier):
    """Beats (B, in_channels, T) -> logits (B, num_classes).

    `architecture` (a dict like the values of EXPERIMENTS) overrides the named experiment; a
    checkpoint passes the dict it stored so the model rebuilds even if EXPERIMENTS changes.
    `input_length`, when given, is the beat length the model is meant for, and forward refuses
    other lengths; None accepts any length of at least the downsampling factor.
    """

    def __init__(self, num_classes, in_channels=12, experiment="ca_ms_v2", dropout_rate=0.5,
                 input_length=None, architecture=None):
        super().__init__()
        arch = copy.deepcopy(architecture) if architecture is not None else (
            experiment_architecture(experiment))
        check_architecture(arch)
        self.config = {"experiment": experiment, "num_classes": int(num_classes),
                       "in_channels": int(in_channels), "input_length": input_length,
                       "dropout_rate": float(dropout_rate), "architecture": arch}
        self.min_length = downsampling_factor(arch)
        if input_length is not None and input_length < self.min_length:
            raise ArchitectureError(f"input_length {input_length} is shorter than the "
                                    f"network's downsampling factor {self.min_length}")

        self.lead_gate = LeadGate(in_channels) if arch["lead_gate"] else None
        k = arch["stem_kernel"]
        self.stem = nn.Sequential(
            nn.Conv1d(in_channels, arch["stem_channels"], k, stride=arch["stem_stride"],
                      padding=k // 2, bias=False),
            nn.BatchNorm1d(arch["stem_channels"]), nn.ReLU(inplace=False),
            nn.MaxPool1d(arch["stem_pool"], ceil_mode=True))
        # BatchNorm follows the stem conv, so its output ignores the weights' scale; a small
        # initial scale makes each update move the weights' direction further, so which leads
        # the stem reads is learned rather than left from the random draw. Input gradients
        # (saliency) then reflect the leads the model uses.
        with torch.no_grad():
            self.stem[0].weight.mul_(arch.get("stem_init_scale", 1.0))
        blocks, channels = [], arch["stem_channels"]
        stages = zip(arch["widths"], arch["blocks"], arch["strides"], strict=True)
        for width, count, stride in stages:
            for i in range(count):
                blocks.append(ResBlock1d(channels, width, stride if i == 0 else 1,
                                         arch["kernel_size"], arch["multi_scale"],
                                         arch["channel_attention"], arch["se_reduction"]))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = (AttentionPool1d(channels, arch["attention_hidden"])
                     if arch["pooling"] == "attention" else None)
        self.dropout = nn.Dropout(dropout_rate)
        self.head = nn.Linear(channels, num_classes)

    def inference_copy(self):
        """An eval-mode copy for input-gradient work (SmoothGrad): each BatchNorm folded into
        the conv before it, parameters frozen. Same outputs and input gradients as the eval
        model up to float rounding, with one pass over the activations less per BatchNorm in
        the forward and in the backward pass."""
        clone = copy.deepcopy(self).eval()
        with torch.no_grad():
            for parent, conv_name, bn_name in conv_bn_pairs(clone):
                conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
                start = 0
                for branch in (conv.branches if isinstance(conv, MultiScaleConv1d) else [conv]):
                    fold_batchnorm(branch, bn, slice(start, start + branch.out_channels))
                    start += branch.out_channels
                setattr(parent, bn_name, nn.Identity())
        return clone.requires_grad_(False)

    def lead_weights(self, x):
        """Per-beat input lead weights (B, in_channels); all ones for models without a gate."""
        if self.lead_gate is None:
            return super().lead_weights(x)
        self.check_input(x)
        return self.lead_gate.weights(x)

    def features(self, x):
        """The encoder's output (B, channels): the pooled features the head classifies."""
        self.check_input(x)
        if self.lead_gate is not None:
            x = self.lead_gate(x)
        h = self.blocks(self.stem(x))
        return h.mean(dim=2) if self.pool is None else self.pool(h)

    def forward(self, x):
        return self.head(self.dropout(self.features(x)))
