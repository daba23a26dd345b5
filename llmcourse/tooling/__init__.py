"""What runs the course, never imported by a learner's notebook except through ``llmcourse.check``.

- ``checker``: the on-the-spot checks of exercises (``llmcourse.check`` and ``llmcourse.reference``);
- ``exercises``: each chapter's exercises, declared: reference, cases, known mistakes;
- ``build``: ``chapters/`` generated from ``solutions/`` (``python -m llmcourse build``);
- ``execute``: run a notebook in a fresh kernel, record its outputs (``python -m llmcourse execute``);
- ``benchmarks``: the benchmark command (``python -m llmcourse bench``) and each chapter's measurements.
"""
