"""Stage 3 of the pipeline: build. A planned ``Job`` becomes a staged tree, an archive and a
wheel, each verified (``kiln.verify``) and recorded (``kiln.package``).

- ``jobs``: ``build_jobs()``, the entry point: preflight, parallel jobs, per-entry logs,
  atomic outputs, reproducibility checks.
- ``cache``: the content-addressed, locked build cache (``$KILN_CACHE``).
- ``toolchains``: one module per toolchain family behind the ``Toolchain`` protocol,
  registered in ``TOOLCHAINS``.
"""
