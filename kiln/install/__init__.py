"""Stage 8 of the pipeline: install. A downstream machine picks, fetches, checks and unpacks
the build made for it.

- ``installer``: ranking of a release's assets for a host, capped and resumable downloads,
  signature and checksum checks, the strict unpack, the atomic swap into the prefix.
- ``host``: what a machine is (CPU level, C library, OS, GPU drivers), probed live or read
  from a recorded profile.
"""
