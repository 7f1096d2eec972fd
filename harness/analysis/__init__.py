"""Study analysis: results DataFrames, paper-shaped tables, curves, heatmaps, samples, report.

    from harness.analysis import analyze_study
    outputs = analyze_study("outputs/my_study")      # -> AnalysisOutputs (paths)
    python -m harness.analyze outputs/my_study --format md,tex,csv
"""

from harness.analysis.load import (
    ResultsError,
    StudyResults,
    final_view,
    load_studies,
    load_study,
    save_results,
)
from harness.analysis.pipeline import (
    AnalysisOutputs,
    analyze_studies,
    analyze_study,
    study_figures,
    study_tables,
)
from harness.analysis.tables import Table, build_table, to_csv, to_html, to_latex, to_markdown

__all__ = [
    "AnalysisOutputs", "ResultsError", "StudyResults", "Table", "analyze_studies",
    "analyze_study", "build_table", "final_view", "load_studies", "load_study", "save_results",
    "study_figures", "study_tables", "to_csv", "to_html", "to_latex", "to_markdown",
]
