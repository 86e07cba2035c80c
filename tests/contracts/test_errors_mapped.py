"""Every error class has a unique stable code and resolves to a documented CLI exit code."""

from __future__ import annotations

import inspect
import re

import pytest

from shipyard import errors
from shipyard.cli.main import EXIT_CODES, exit_code_for

ERROR_CLASSES = [
    obj
    for _, obj in inspect.getmembers(errors, inspect.isclass)
    if issubclass(obj, errors.ShipyardError)
]


def test_error_codes_are_unique_kebab_case() -> None:
    codes = [cls.code for cls in ERROR_CLASSES]
    assert len(codes) == len(set(codes)), sorted(codes)
    for code in codes:
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", code), code


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_resolves_to_an_exit_code(cls: type[errors.ShipyardError]) -> None:
    code = exit_code_for(cls("x"))
    assert code in set(EXIT_CODES.values())
    assert code != 0


def test_invalid_input_errors_are_value_errors() -> None:
    assert issubclass(errors.InvalidModelRef, ValueError)
    assert issubclass(errors.SignatureMismatch, ValueError)


def test_errors_module_imports_nothing_from_shipyard() -> None:
    source = inspect.getsource(errors)
    assert "from shipyard" not in source
    assert "import shipyard" not in source
