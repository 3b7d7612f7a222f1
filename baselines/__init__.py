"""Baselines of the PreSa benchmark (see docs/baselines.md).

Ground-truth offline safe RL (they read the dataset's reward and cost, and say so in their names'
documentation): ``bc-all``, ``bc-safe``, ``cdt``, ``bcq-lag``, ``cpq``, ``coptidice`` -- thin
wrappers around osrl-lib's classes with OSRL's per-task defaults. ``safe-rlhf`` learns a reward model
from preference pairs and a cost model from safety labels, relabels the dataset and hands it to one
of the same constrained offline RL algorithms.
"""
