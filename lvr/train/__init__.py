"""Training: the loop and its checkpoints, fine-tuning from a checkpoint, self-supervised
pretraining, processes under torchrun, the training run (split, fit, test, write), and the
reader of a finished run that evaluation and explanation start from.

Imports the foundation, lvr.data, lvr.stats and lvr.report.
"""
