"""The diagnosis as a report: everything a run directory holds, with plots.

Three parts, one concept each: :mod:`.document` reads a run directory (rank, teachers,
distill results, and the truth for generated data) into one JSON-able document;
:mod:`.plots` draws its figures with matplotlib (the ``report`` extra) as PNG bytes, and
says which it skipped without it; :mod:`.layout` lays the document out as Markdown or as
one self-contained HTML page with the plots embedded, so it opens offline.
"""

from cmkd_doctor.report.document import collect, compare, diagnosis, run_labels, summary
from cmkd_doctor.report.layout import (
    FORMATS,
    Rendered,
    first_screen,
    render,
    render_compare,
    summary_rows,
    to_html,
    to_markdown,
)
from cmkd_doctor.report.plots import plots, student_groups, students_plot

__all__ = ["FORMATS", "Rendered", "collect", "compare", "diagnosis", "first_screen", "plots",
           "render", "render_compare", "run_labels", "student_groups", "students_plot",
           "summary", "summary_rows", "to_html", "to_markdown"]
