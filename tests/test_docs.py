"""docs/layer-files.md against config.py's LAYER_PARSERS: every registered type has a section
whose table lists exactly the keys the type's parser accepts, in the right file; the keys of
every layer are listed once; README's and docs' links point at files of the repository."""
import os
import re

import pytest

from ccn import config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = {"type", "inputs", "gpu", "neuron"}


def sections():
    """{heading: [(key, file)]} of docs/layer-files.md's tables."""
    text = open(os.path.join(REPO, "docs", "layer-files.md"), encoding="utf-8").read()
    out, heading = {}, None
    for line in text.splitlines():
        m = re.match(r"#{2,3} (.*)", line)
        if m:
            heading = m.group(1).strip().strip("`")
            out[heading] = []
            continue
        row = re.match(r"\| `(\w+)` \| (def|params|either) \|", line)
        if row and heading is not None:
            out[heading].append((row.group(1), row.group(2)))
    return out


def test_every_layer_type_is_documented_and_nothing_else():
    documented = {h for h in sections() if h in config.LAYER_PARSERS or re.fullmatch(r"[\w.]+", h)}
    assert set(config.LAYER_PARSERS) <= documented
    assert documented - set(config.LAYER_PARSERS) == set(), "documented types config.py does not know"


@pytest.mark.parametrize("type_name", sorted(config.LAYER_PARSERS))
def test_each_types_keys_match_its_parser(type_name):
    parser = config.LAYER_PARSERS[type_name]()
    rows = sections()[type_name]
    keys = [k for k, _ in rows]
    assert len(keys) == len(set(keys)), f"{type_name}: a key listed twice"
    expected = {k: "def" for k in parser.keys}
    expected.update({k: "either" for k in parser.tunable_keys})
    expected.update({k: "params" for k in parser.learning_keys})
    if type_name == "neuron":
        expected["neuron"] = "def"
    assert dict(rows) == expected


def test_the_keys_of_every_layer():
    rows = dict(sections()["Keys of every layer"])
    assert set(rows) == COMMON and set(rows.values()) == {"def"}
    for type_name, cls in config.LAYER_PARSERS.items():
        own = set(cls().definition_keys()) - set(cls.keys) - set(cls.tunable_keys)
        assert own <= COMMON, f"{type_name} has keys the page does not list: {own - COMMON}"


@pytest.mark.parametrize("page", ["README.md", "docs/DESIGN.md", "docs/layer-files.md", "docs/coming-from-pytorch.md"])
def test_links_point_into_the_repository(page):
    text = open(os.path.join(REPO, page), encoding="utf-8").read()
    for target in re.findall(r"\]\(([^)#\s]+)", text):
        assert not re.match(r"[a-z]+:", target), f"{page} links outside the repository: {target}"
        assert os.path.exists(os.path.join(REPO, os.path.dirname(page), target)), f"{page}: {target} is missing"


def test_readme_quick_start_installs_into_a_virtual_environment_and_ci_runs_it():
    import importlib.util
    spec = importlib.util.spec_from_file_location("readme_check", os.path.join(REPO, "tools", "readme_check.py"))
    readme_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readme_check)
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    for which in ("train", "test"):
        command = readme_check.quick_start(text, which)
        assert "python3 -m venv .venv && . .venv/bin/activate && pip install " in command
        assert "apt-get install -y python3-venv" in command
        assert readme_check.with_wheel(command, "/w/ccn.whl") != command  # the wheel replaces "."
    assert "pip install /w/ccn.whl &&" in readme_check.with_wheel(readme_check.quick_start(text, "train"), "/w/ccn.whl")
    assert 'pip install "/w/ccn.whl[test]"' in readme_check.with_wheel(readme_check.quick_start(text, "test"), "/w/ccn.whl")
    later = readme_check.later_commands(text)
    assert any("--show-similar" in c for c in later) and any("ccn.export" in c for c in later)
    ci = open(os.path.join(REPO, ".ci", "run"), encoding="utf-8").read()
    assert "tools/readme_check.py run test" in ci and "tools/readme_check.py run train" in ci
    assert "pip install \".[test]\"" not in ci  # the test command is README's, not a copy of it


def test_console_commands_name_the_entry_points(capsys):
    import importlib
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    scripts = project["scripts"]
    assert set(scripts) == {"ccn-train", "ccn-show", "ccn-export"}
    for target in scripts.values():
        module, function = target.split(":")
        main = getattr(importlib.import_module(module), function)
        with pytest.raises(SystemExit) as stop:
            main(["--help"])
        assert stop.value.code == 0
    assert "torch" in project["optional-dependencies"]["bench"]
    assert "pytest" in project["optional-dependencies"]["test"]
