"""Reports of an evaluation: plots (matplotlib, imported when drawn) and a self-contained
HTML page (``write_report``)."""

from .html import render_report, write_report

__all__ = ["render_report", "write_report"]
