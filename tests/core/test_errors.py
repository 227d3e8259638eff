"""Every error class of Headwater's own has the one base and a stable code of its own."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import headwater
from headwater.core.errors import HeadwaterError


def _own_error_classes() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(headwater.__path__, "headwater."):
        if ".migrations" in info.name or info.name.endswith(("runner", "noop")):
            continue
        module = importlib.import_module(info.name)
        for _name, obj in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(obj, BaseException)
                and obj.__module__ == info.name
                and obj.__module__.startswith("headwater.")
            ):
                found.append(obj)
    return found


def test_every_error_class_has_the_one_base_and_a_code() -> None:
    classes = _own_error_classes()
    assert len(classes) >= 15
    strays = [c.__qualname__ for c in classes if not issubclass(c, HeadwaterError)]
    assert not strays, strays
    codes = [c.__dict__["code"] for c in classes if "code" in c.__dict__]
    assert len(codes) == len(set(codes)), codes
