"""The release page: ``index.html`` of a release directory and of a mirror's root, made from
the release index (``kiln.release.index``), with the visitor's download chosen by the
installers' own ranking (``choices``) and the history drawn as SVG (``svg``)."""

from kiln.release.page.choices import VISITORS, recommendations, visitor_host
from kiln.release.page.render import PAGE_FILES, mirror_page, release_page

__all__ = ["PAGE_FILES", "VISITORS", "mirror_page", "recommendations", "release_page",
           "visitor_host"]
