"""Stage 6 of the pipeline: release. Per-asset records become one signed release directory.

- ``assemble``: the project settings, the completeness gate, ``manifest.json``, ``SHA256SUMS``
  and its minisign signature, ``assemble()`` (atomic) and ``read_release()``.
- ``sums``: the strict ``SHA256SUMS`` / tag / file-name rules shared with the installers.
- ``sign``: minisign signing and key handling.
- ``notes``: release notes from git history, with disabled builds and their tracking links.
- ``sbom``: the CycloneDX SBOM.
- ``install_scripts``: ``install.sh`` / ``install.ps1`` rendered from ``templates/``.
- ``index``: ``index.json``, the signed release index installers choose from (version and
  expiry against rollback and freeze; docs/index.md).
- ``provenance``: the signed in-toto Statement (SLSA provenance v1) of a release.
- ``check``: ``kiln verify``, the checks a downstream user runs on a release directory.
- ``reproduce``: ``kiln reproduce``, rebuild a release and compare bytes.
"""
