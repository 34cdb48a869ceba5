"""The data-efficiency sweep: how many labels does each regime need?

:mod:`~shared.sweep.subsets` draws the labelled subsets, :mod:`~shared.sweep.run` trains and scores every
(fraction, regime, seed) point through :func:`shared.training.run.run_regime`, and
:mod:`~shared.sweep.curves` summarises the points (curves, crossovers with the frozen probe, the figure).
``python -m pipelines.sweep`` is the stage around :func:`~shared.sweep.run.run_sweep`.
"""
