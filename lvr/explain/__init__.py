"""Explanations of a trained model: attribution maps (SmoothGrad and others), lead-importance
statistics over beats and patients (ICC, ANOVA, Friedman), counterfactual wave effects, the
checks of an explanation, and the saliency analysis that runs them on a finished run.

Imports the foundation, lvr.data, lvr.measure, lvr.stats, lvr.report and lvr.train.
"""
