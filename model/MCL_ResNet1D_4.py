"""The 4-class model of the published interface: model.resnet1d.ResNet1D with num_classes=4."""
from model import resnet1d
from model.resnet1d import EXPERIMENTS

__all__ = ["ResNet1D", "EXPERIMENTS"]

NUM_CLASSES = 4


class ResNet1D(resnet1d.ResNet1D):
    def __init__(self, in_channels=12, experiment="ca_ms_v2", dropout_rate=0.5, input_length=None):
        super().__init__(NUM_CLASSES, in_channels=in_channels, experiment=experiment,
                         dropout_rate=dropout_rate, input_length=input_length)
