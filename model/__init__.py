"""The model package: the residual 1D CNN (resnet1d.py) and the two classifiers of the published
interface (MCL_ResNet1D_2/4.py). It imports only torch, numpy and its own files; checkpoint
files are lvr.checkpoints' job.
"""
from model.resnet1d import EXPERIMENTS, ArchitectureError, ResNet1D

__all__ = ["EXPERIMENTS", "ResNet1D", "ArchitectureError", "build_model", "parameter_count"]


def build_model(num_classes, experiment="ca_ms_v2", in_channels=12, dropout_rate=0.5,
                input_length=None):
    """A freshly initialised ResNet1D of the named experiment."""
    return ResNet1D(num_classes, in_channels=in_channels, experiment=experiment,
                    dropout_rate=dropout_rate, input_length=input_length)


def parameter_count(model):
    """Number of scalar parameters of `model` (buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())
