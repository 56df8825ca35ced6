"""Generated files: the CI workflows and the README's matrix table, from ``matrix/``.

- ``workflow``: ``.github/workflows/{release,ci}.yml`` from ``ci/*.j2`` and ``ci/config.yaml``,
  with the drift check and actionlint.
- ``docs``: the matrix table between the markers in ``README.md``.
"""
