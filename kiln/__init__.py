"""kiln: the release-engineering system that builds, verifies, packages and ships ember."""

__version__ = "0.1.0"
__all__ = ["__version__"]
