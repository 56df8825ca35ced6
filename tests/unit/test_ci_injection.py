"""``ci/config.yaml`` values cannot inject YAML into the generated workflows.

A value with a newline used to be printed as it was: a runner override or python version could
add ``permissions: write-all`` or an ``env:`` block reading ``${{ github.token }}`` to the
release workflow. Now every value is checked when the file is loaded (``ConfigError``, exit 2,
naming the key), and the templates print values through filters that quote them; the property
test below renders every value that passes the checks and reads it back with a YAML parser."""

from __future__ import annotations

import copy
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from kiln.ci.workflow import job_id, load_config, render, yaml_quoted, yaml_scalar
from kiln.errors import ConfigError
from kiln.matrix import Matrix, load_matrix

REPO = Path(__file__).resolve().parents[2]
ENTRY = "ubuntu-x64"
INJECT = "\npermissions: write-all\nenv:\n  T: ${{ github.token }}"


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    return load_matrix(REPO / "matrix")


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "ci" / "config.yaml").read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def load(tmp_path: Path, matrix: Matrix, doc: dict[str, Any]) -> Any:
    path = tmp_path / "config.yaml"
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    path.write_text(yaml.dump(doc, Dumper=dumper), encoding="utf-8")
    return load_config(path, matrix)


def setting(doc: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``doc`` with the dotted ``key`` set to ``value``."""
    out = copy.deepcopy(doc)
    *parents, last = key.split(".")
    node = out
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return out


def step(**fields: Any) -> dict[str, Any]:
    return {"name": "extra", "run": "true", **fields}


ATTEMPTS = [
    # (dotted key in the file, value, what the error names)
    (f"runner_overrides.{ENTRY}", "ubuntu-24.04" + INJECT, f"runner_overrides.{ENTRY}"),
    (f"runner_overrides.{ENTRY}", "ubuntu-24.04\n", f"runner_overrides.{ENTRY}"),
    (f"runner_overrides.{ENTRY}", "${{ github.token }}", f"runner_overrides.{ENTRY}"),
    (f"runner_overrides.{ENTRY}", ["ubuntu-24.04", "x"], f"runner_overrides.{ENTRY}"),
    ("python", '3.11"' + INJECT, "python"),
    ("python", "3.11\n", "python"),
    ("python", "3.11\r", "python"),
    ("actions.checkout", "actions/checkout@v4\n", "actions.checkout"),
    ("actions.checkout", "actions/checkout@v4" + INJECT, "actions.checkout"),
    ("concurrency.group", "release" + INJECT, "concurrency.group"),
    ("concurrency.group", "release-${{ github.token }}", "concurrency.group"),
    ("concurrency.group", "release-${{ secrets.KILN_SIGNING_KEY }}", "concurrency.group"),
    ("concurrency.group", "release-${{ github.ref }}\n", "concurrency.group"),
    ("concurrency.cancel-in-progress", "true\nx: y", "concurrency.cancel-in-progress"),
    ("concurrency.extra", "x", "concurrency"),
    ("permissions.contents", "write\nactions: write", "permissions.contents"),
    ("permissions.contents", "write-all", "permissions.contents"),
    ("permissions", {"contents\nid-token": "write"}, "permissions"),
    ("extra_runner_labels", ["windows-11-arm\n"], "extra_runner_labels[0]"),
    ("extra_runner_labels", "windows-11-arm", "extra_runner_labels"),
    ("extra_steps.before_build", [step(run="echo ${{ github.event.head_commit.message }}")],
     "extra_steps.before_build[0].run"),
    ("extra_steps.before_build", [step(name="x\npermissions: write-all")],
     "extra_steps.before_build[0].name"),
    ("extra_steps.before_build", [step(permissions="write-all")],
     "extra_steps.before_build[0]"),
    ("extra_steps.after_build", [step(uses="actions/checkout@v4\n")],
     "extra_steps.after_build[0].uses"),
    ("extra_steps.after_build", [step(env={"A\nB": "x"})], "extra_steps.after_build[0].env"),
    (f"setup.{ENTRY}", [step(shell="bash\x00")], f"setup.{ENTRY}[0].shell"),
]


@pytest.mark.parametrize(("key", "value", "named"), ATTEMPTS,
                         ids=[f"{i}-{a[0]}" for i, a in enumerate(ATTEMPTS)])
def test_injection_attempts_are_refused_naming_the_key(
        tmp_path: Path, matrix: Matrix, base: dict[str, Any], key: str, value: Any,
        named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, matrix, setting(base, key, value))
    assert named in info.value.message, info.value.message
    assert info.value.exit_code == 2


def test_the_committed_settings_pass(tmp_path: Path, matrix: Matrix,
                                     base: dict[str, Any]) -> None:
    config = load(tmp_path, matrix, base)
    assert config.concurrency["group"] == "release-${{ github.ref }}"


# --------------------------------------------------------------------------------------------
# property: whatever passes the checks is printed as exactly that scalar

NASTY = ["true", "false", "yes", "no", "on", "off", "null", "~", "3.11", "3.10", "1e3",
         "0x1A", "0o17", "012", ".inf", ".NaN", "-", "?", ":", "a: b", "a #b", "#x", "'a'",
         '"a"', "a'b", "[a]", "{a}", "*a", "&a", "!a", "|", ">", "%a", "@a", "`a", "a,b",
         "a b", " a", "a ", "", "a\nb", "a\\nb", "\t", "a\x85b", "a\u2028b", "é", "${{ x }}",
         "$a", "a}}", "3.x", "pypy3.10", "self-hosted", "ubuntu-24.04", "a/b@c", "a/b@c\n"]
ALPHABET = ("abcXYZ019._-/@:+ #'\"{}[]&*!|>%`,?$~\n\t\r\\=" + "\x85\u2028\u00e9\x00\x7f")


def candidates(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    out = list(NASTY)
    for _ in range(n):
        out.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 12))))
        # and some from the characters the settings allow, to exercise what passes
        out.append("".join(rng.choice("abz09.-_+") for _ in range(rng.randint(1, 8))))
    return out


def workflows(matrix: Matrix, config: Any, repo_root: Path) -> dict[str, Any]:
    files = render(matrix, config, repo_root / "ci").files
    # libyaml's safe loader where there is one: the same YAML 1.1 safe schema, much faster.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return {name: yaml.load(text, Loader=loader) for name, text in files.items()}


def where(field: str, wf: dict[str, Any]) -> list[object]:
    """Where ``field``'s value lands in the parsed workflows."""
    release, ci = wf["release.yml"], wf["ci.yml"]
    job = release["jobs"][job_id(ENTRY)]
    if field == "runner":
        return [job["runs-on"]]
    if field == "python":
        return [s["with"]["python-version"] for w in (release, ci) for j in w["jobs"].values()
                for s in j["steps"] if "python-version" in s.get("with", {})]
    if field == "group":
        return [release["concurrency"]["group"]]
    if field == "checkout":
        return [j["steps"][0]["uses"] for j in release["jobs"].values()
                if not j.get("container")]
    raise AssertionError(field)


FIELDS = {"runner": f"runner_overrides.{ENTRY}", "python": "python",
          "group": "concurrency.group", "checkout": "actions.checkout"}


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_every_accepted_value_reads_back_as_exactly_that_scalar(
        tmp_path: Path, matrix: Matrix, base: dict[str, Any], repo_root: Path,
        field: str) -> None:
    reference = workflows(matrix, load(tmp_path, matrix, base), repo_root)
    accepted = 0
    for value in candidates(seed=sum(map(ord, field)), n=15):
        prefix = {"group": "g-", "checkout": "o/r@"}.get(field, "")
        for v in (value, prefix + value):
            try:
                config = load(tmp_path, matrix, setting(base, FIELDS[field], v))
            except ConfigError:
                continue
            accepted += 1
            wf = workflows(matrix, config, repo_root)
            spots = where(field, wf)
            assert spots and all(s == v and isinstance(s, str) for s in spots), (v, spots)
            # Nothing else changed: no key, job or permission was added.
            for name in wf:
                assert set(wf[name]) == set(reference[name])
                assert wf[name]["permissions"] == reference[name]["permissions"]
                assert set(wf[name]["jobs"]) == set(reference[name]["jobs"])
    assert accepted >= 20  # the property was tried on real values, not only refusals


def test_the_quoting_filters_read_back_for_any_string() -> None:
    rng = random.Random(7)
    values = [*NASTY, *("".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 16)))
                        for _ in range(600))]
    for v in values:
        for text in (yaml_scalar(v), yaml_quoted(v)):
            assert "\n" not in text and "\r" not in text
            assert yaml.safe_load(f"k: {text}\nz: 1\n") == {"k": v, "z": 1}, (v, text)
            assert yaml.safe_load(f"- {text}\n- 1\n") == [v, 1], (v, text)


def test_the_committed_workflows_are_unchanged_by_the_quoting(repo_root: Path, matrix: Matrix,
                                                              tmp_path: Path) -> None:
    shutil.copytree(repo_root / "ci", tmp_path / "ci")
    config = load_config(tmp_path / "ci" / "config.yaml", matrix)
    files = render(matrix, config, tmp_path / "ci").files
    for name, text in files.items():
        assert (repo_root / ".github" / "workflows" / name).read_text(encoding="utf-8") == text
