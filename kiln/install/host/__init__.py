"""Facts about the machine kiln installs on, read once into a frozen ``Host``.

``probe(source)`` reads them through a ``Source``: ``LiveSource(env)`` for this machine,
``load_profile(path)`` for a recorded one (tests, bug reports). See ``kiln.install.host.probe`` for
what is read and ``kiln.install.host.source`` for the profile format.
"""

from __future__ import annotations

from kiln.install.host.facts import Cpu, Gpu, Host, VulkanIcd
from kiln.install.host.probe import probe, x86_level
from kiln.install.host.source import FixtureSource, LiveSource, Output, Source, load_profile

__all__ = [
    "Cpu",
    "FixtureSource",
    "Gpu",
    "Host",
    "LiveSource",
    "Output",
    "Source",
    "VulkanIcd",
    "load_profile",
    "probe",
    "x86_level",
]
