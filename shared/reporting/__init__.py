"""The comparison product: tables, significance, cost/quality fronts, figures and the HTML/markdown report.

Everything here is a function of *measured* inputs: the metrics JSON that ``evaluate`` writes for every
(domain, regime) and, where available, its test-set probabilities (:class:`shared.evaluation.predictions.Predictions`).
:func:`build_rows` turns those into one JSON-ready row per (domain, regime) -- the content of
``reports/comparison.json`` -- and every other artefact (:func:`summarize`, :func:`markdown_report`,
:func:`html_report`, the figures) is derived from the rows alone, so a report rebuilt from an MLflow
tracking server equals the one built from local files whenever the rows do.

Significance: the winner (highest primary test metric) is compared with every other regime by a paired
bootstrap on the same test items (:func:`shared.evaluation.metrics.paired_bootstrap`); a lead is *significant* when
the 95% interval of the resampled differences excludes 0.
"""

from shared.reporting.figures import bar_chart, cost_quality_chart, report_figures, write_history_csv
from shared.reporting.html import html_report
from shared.reporting.prose import recommendation, summarize
from shared.reporting.rows import COLUMNS, basic_row, build_rows, collect, finite_rows, pareto_front
from shared.reporting.tables import anchors_for, load_anchors, markdown_report, markdown_table

__all__ = ["COLUMNS", "anchors_for", "bar_chart", "basic_row", "build_rows", "collect", "cost_quality_chart",
           "finite_rows", "html_report", "load_anchors", "markdown_report", "markdown_table", "pareto_front",
           "recommendation", "report_figures", "summarize", "write_history_csv"]
