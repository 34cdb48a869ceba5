"""Evaluation: metrics with bootstrap CIs and operating points, stored predictions, evaluation plots."""
