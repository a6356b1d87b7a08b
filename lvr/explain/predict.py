"""The model's class probabilities of beats, through the one batched prediction loop
(lvr.train.loop.predict_logits): the maps' probabilities, the wave effects' and the deletion
test's P(true class)."""
import numpy as np
import torch

from lvr.explain.smoothgrad import model_device
from lvr.train.loop import predict_logits


def class_probabilities(model, x, batch_size, device=None):
    """Softmax of the logits (N, classes) float32 numpy of the beats `x`: a tensor, a numpy array
    or StandardisedBeats (read and normalised batch by batch). `device`: the model's own when
    None."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if len(x) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    device = model_device(model) if device is None else device
    # detached: logits that are a view of a parameter still require grad after inference mode
    logits = predict_logits(model, x, batch_size, device).detach()
    return torch.softmax(logits, dim=1).numpy()


def true_class_probability(model, x, y, batch_size=256, device=None):
    """P(true class) (N,) float32 of the beats `x` (as class_probabilities takes them) whose true
    labels are `y`."""
    prob = class_probabilities(model, x, batch_size, device)
    return prob[np.arange(len(prob)), np.asarray(y, dtype=int)]
