"""The model package: the residual 1D CNN (resnet1d.py), the PTB-XL benchmark's reference
networks (reference.py) and the two classifiers of the published interface
(MCL_ResNet1D_2/4.py). It imports only torch, numpy and its own files; checkpoint files are
lvr.train.checkpoints' job.
"""
from model.reference import NETWORK_CLASSES, REFERENCE_NETWORKS
from model.resnet1d import EXPERIMENTS, ArchitectureError, ResNet1D

__all__ = ["EXPERIMENTS", "REFERENCE_NETWORKS", "EXPERIMENT_NAMES", "ResNet1D",
           "ArchitectureError", "build_model", "rebuild_model", "parameter_count"]

EXPERIMENT_NAMES = (*EXPERIMENTS, *REFERENCE_NETWORKS)


def build_model(num_classes, experiment="ca_ms_v2", in_channels=12, dropout_rate=0.5,
                input_length=None):
    """A freshly initialised network of the named experiment (EXPERIMENT_NAMES)."""
    if experiment in REFERENCE_NETWORKS:
        network = REFERENCE_NETWORKS[experiment]
    elif experiment in EXPERIMENTS:
        network = ResNet1D
    else:
        raise ArchitectureError(f"unknown experiment {experiment!r}; "
                                f"valid names: {', '.join(EXPERIMENT_NAMES)}")
    return network(num_classes, in_channels=in_channels, experiment=experiment,
                   dropout_rate=dropout_rate, input_length=input_length)


def rebuild_model(num_classes, in_channels, experiment, dropout_rate, input_length=None,
                  architecture=None):
    """The network a checkpoint's config describes. Its architecture's "network" names the
    family (absent: ResNet1D, as in checkpoints written before the reference networks); without
    an architecture the experiment name decides."""
    if architecture is None:
        return build_model(num_classes, experiment, in_channels, dropout_rate, input_length)
    family = architecture.get("network")
    if family is not None and family not in NETWORK_CLASSES:
        raise ArchitectureError(f"unknown network {family!r}; valid: "
                                f"{', '.join(NETWORK_CLASSES)}")
    network = ResNet1D if family is None else NETWORK_CLASSES[family]
    return network(num_classes, in_channels=in_channels, experiment=experiment,
                   dropout_rate=dropout_rate, input_length=input_length,
                   architecture=architecture)


def parameter_count(model):
    """Number of scalar parameters of `model` (buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())
