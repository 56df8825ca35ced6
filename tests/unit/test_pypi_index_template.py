"""``pypi-index+...{variant}...``: the URL template that names each backend variant's index."""

from __future__ import annotations

import pytest

from kiln.errors import ConfigError
from kiln.publish.pypi_index import pypi_index_publisher


def make(target: str, *, secure: bool = False) -> object:
    return pypi_index_publisher(target, secure=secure, env={}, log=lambda _m: None)


def test_a_path_template_names_one_index_per_variant_and_cpu_for_the_cpu_wheels() -> None:
    p = pypi_index_publisher("127.0.0.1:8080/{variant}", secure=False, env={},
                             log=lambda _m: None)
    assert p.index_url("") == "http://127.0.0.1:8080/cpu/"
    assert p.index_url("cu124") == "http://127.0.0.1:8080/cu124/"
    assert p.project_url("rocm7.2", "Ember") == "http://127.0.0.1:8080/rocm7.2/simple/ember/"


def test_a_host_template() -> None:
    p = pypi_index_publisher("{variant}.pypi.example/ember/", secure=True, env={},
                             log=lambda _m: None)
    assert p.index_url("") == "https://cpu.pypi.example/ember/"
    assert p.index_url("vulkan") == "https://vulkan.pypi.example/ember/"


def test_a_root_keeps_the_family_layout() -> None:
    p = pypi_index_publisher("127.0.0.1:8080/", secure=False, env={}, log=lambda _m: None)
    assert p.index_url("") == "http://127.0.0.1:8080/"
    assert p.index_url("cu124") == "http://127.0.0.1:8080/cu124/"


@pytest.mark.parametrize("target", ["h/{variant}/{variant}/", "h/{backend}/", "h/{variant/"])
def test_a_template_holds_the_field_once_and_no_other_braces(target: str) -> None:
    with pytest.raises(ConfigError, match=r"holds \{variant\} once"):
        make(target)
