"""The study in one command (``study.py``): which runs it holds, how they are run, aggregated and reported.

``registry.py`` (experiments and the run plan), ``runner.py`` (one run: skip, resume or train, then evaluate),
``progress.py`` (the overall progress line and its ETA), ``rule.py`` (mean and std over seeds, the difference
rule), ``aggregate.py`` (``study.json``), ``findings.py`` (the study's answers as data, with their sentences),
``data_summary.py`` (dataset statistics), ``figures.py`` with ``figures_problem1.py`` and ``figures_problem2.py``
(the study's own figures), ``report.py`` with ``report_problem1.py``, ``report_problem2.py`` and
``report_appendix.py`` (``REPORT.md``), ``readme.py`` (the README's block), ``carry.py`` (``--continue-from``) and
``export.py`` (``--export``).
"""
