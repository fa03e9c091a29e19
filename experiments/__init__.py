"""The study in one command (``study.py``): which runs it holds, how they are run, aggregated and reported.

``registry.py`` (experiments and the run plan), ``runner.py`` (one run: skip, resume or train, then evaluate),
``progress.py`` (the overall progress line and its ETA), ``aggregate.py`` (mean and std over seeds, the difference
rule, ``study.json``), ``data_summary.py`` (dataset statistics), ``figures.py`` (the study's own figures),
``report.py`` with ``report_problem1.py`` and ``report_problem2.py`` (``REPORT.md``) and ``export.py``
(``--export``).
"""
