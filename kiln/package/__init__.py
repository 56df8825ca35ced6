"""Stage 5 of the pipeline: package. A verified staged tree becomes release assets and their
records.

- ``records``: ``AssetRecord`` (one asset and what a release or an installer needs to know
  about it), reading and writing the per-asset ``.json`` records.
- ``archive``: reproducible tar.gz / zip archives with BUILD-INFO.
- ``wheel``: per-entry wheels (tags, writer, checks) and the cibuildwheel project.
- ``conan``: the Conan 2 package layout of an entry.
"""
