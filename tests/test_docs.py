"""Docstring examples are part of the documentation: run them, so an example that stopped being
true fails here instead of misleading a reader."""
import doctest
import importlib
import pkgutil

import pytest

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
