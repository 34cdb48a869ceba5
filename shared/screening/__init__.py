"""Backbone screening: which pretrained model to train on, scored before any training.

:mod:`shared.screening.estimators` holds the transferability estimators. Each scores one backbone on one
target task from what a single forward pass gives: its frozen features ``(N, D)`` and the integer labels
``(N,)`` (LogME, H-score, its Ledoit-Wolf shrinkage form, kNN accuracy) or the source model's class
probabilities ``(N, K_source)`` (LEEP, NCE). Higher is better for every score; scores rank candidate
backbones on the *same* task and are not comparable across tasks. :func:`~shared.screening.estimators.score_all`
returns every applicable score with the seconds it took.
"""
