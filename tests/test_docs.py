"""Docstring examples are part of the documentation: run them, so an example that stopped being
true fails here instead of misleading a reader. The same for the front page and the manual: every
relative link resolves (and its #anchor names a heading), every command they name exists, and the
front page's model-file snippet runs under plain PyTorch and prints what the file records."""
import doctest
import importlib
import json
import pkgutil
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PACKAGES = ("space", "search", "storage")


def _modules():
    names = []
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        names += [f"{pkg_name}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)]
    return names


def test_every_package_module_is_found():
    assert {"space.searchspace", "search.train", "search.stopping", "storage.notes"} <= set(_modules())


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} failing example(s) in {name}"


# The front page, the manual and the experiments' READMEs: what a reader follows links through.
DOC_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "experiments").glob("*/README.md"))]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _links(text: str) -> list[str]:
    """Markdown link and image targets outside fenced code blocks."""
    return LINK.findall(FENCE.sub("", text))


def _external(target: str) -> bool:
    """http(s), mailto: and other schemes are not checked here."""
    return re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) is not None


def test_link_finder_sees_links_and_images_but_not_code():
    text = "[a](x.md) ![b](img/y.png \"t\") [c](https://e.org/z) [d](#here)\n```python\nf = d[i](x)\n```\n"
    assert _links(text) == ["x.md", "img/y.png", "https://e.org/z", "#here"]


@pytest.mark.parametrize("page", DOC_PAGES, ids=[str(p.relative_to(ROOT)) for p in DOC_PAGES])
def test_every_relative_link_resolves(page):
    missing = []
    for target in _links(page.read_text()):
        if _external(target) or target.startswith("#"):
            continue  # an anchor within the page: test_every_anchor_names_a_heading
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(ROOT)} links to what is not there: {missing}"


def _heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, links reduced to their text, what is
    neither a word character, a space nor a hyphen dropped, spaces as hyphens; a repeat gets -1, -2."""
    anchors, seen = set(), {}
    for line in FENCE.sub("", text).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))
            slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
            n = seen[slug] = seen.get(slug, -1) + 1
            anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def test_heading_anchors_follow_githubs_rule():
    text = "# `find` from the defaults (blocked)\n## Round 4: SiLU at 3,600 (2026-12-01)\n## Notes\n## Notes\n```\n# not a heading\n```\n"
    assert _heading_anchors(text) == {"find-from-the-defaults-blocked", "round-4-silu-at-3600-2026-12-01", "notes", "notes-1"}


@pytest.mark.parametrize("page", DOC_PAGES, ids=[str(p.relative_to(ROOT)) for p in DOC_PAGES])
def test_every_anchor_names_a_heading(page):
    # a renamed heading breaks every link to it silently: README linked "#find-from-the-defaults-in-progress"
    broken = []
    for target in _links(page.read_text()):
        if _external(target) or "#" not in target:
            continue
        path, anchor = target.split("#", 1)
        linked = page.parent / path if path else page
        if linked.suffix == ".md" and linked.exists() and anchor not in _heading_anchors(linked.read_text()):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to headings that are not there: {broken}"


def _subcommands() -> set[str]:
    import argparse

    import study
    (sub,) = [a for a in study.parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def _named_commands(text: str) -> set[str]:
    """`mnist-nas <command>` as written in code (fenced blocks and `inline` spans)."""
    code = "\n".join(FENCE.findall(text) + re.findall(r"`([^`\n]+)`", FENCE.sub("", text)))
    return set(re.findall(r"mnist-nas[ \t]+([a-z][a-z0-9-]*)", code))


def test_readme_names_only_real_commands_and_lists_them_all():
    real = _subcommands()
    assert {"search", "find", "worker", "export", "evaluate"} <= real
    named = _named_commands((ROOT / "README.md").read_text())
    assert named <= real, f"README names commands the CLI does not have: {sorted(named - real)}"
    assert real <= named, f"README's command table misses: {sorted(real - named)}"


@pytest.mark.parametrize("page", DOC_PAGES[1:], ids=[str(p.relative_to(ROOT)) for p in DOC_PAGES[1:]])
def test_the_manual_names_only_real_commands(page):
    named = _named_commands(page.read_text())
    assert named <= _subcommands(), f"{page.relative_to(ROOT)}: no such command: {sorted(named - _subcommands())}"


def _readme_snippet() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
    (snippet,) = [b for b in blocks if "torch.export.load" in b]
    return snippet


def test_readme_snippet_scores_the_test_set_in_batches():
    """All 10,000 test images in one call took 5.8-8.5 GB; the snippet must not teach that."""
    snippet = _readme_snippet()
    assert "range(0, len(labels), 250)" in snippet and "images[i:i + 250]" in snippet
    assert snippet == re.search(r"^```python\n(.*?)^```", (ROOT / "docs" / "model-files.md").read_text(),
                                re.S | re.M).group(1), "README and docs/model-files.md show the same snippet"


@pytest.mark.real
def test_readme_snippet_runs_under_plain_pytorch_and_prints_the_recorded_accuracy(real_root):
    snippet = _readme_snippet()
    assert 'raw = "data/MNIST/raw/"' in snippet
    code = snippet.replace('raw = "data/MNIST/raw/"', f"raw = {str(real_root / 'MNIST' / 'raw') + '/'!r}")
    # -I: no project code on the path, as a user of the file has it; run from the repository root
    r = subprocess.run([sys.executable, "-I", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    extra = {"mnist_nas.json": ""}
    import torch
    torch.export.load(str(ROOT / "models" / "under5k.pt2"), extra_files=extra)
    recorded = json.loads(extra["mnist_nas.json"])["test_acc"]
    assert r.stdout.strip() == f"test accuracy {recorded:.2f} % (the file records {recorded:.2f} %)"
    assert f"`test accuracy {recorded:.2f} % (the file records {recorded:.2f} %)`" in (ROOT / "README.md").read_text()
