"""Hand-written checks of input arrays against a signature (hot path: no pydantic per call).

Built once per loaded model; :meth:`InputChecker.check` costs a few attribute lookups per
input when the arrays already fit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from shipyard.errors import SignatureMismatch
from shipyard.spec import DType

if TYPE_CHECKING:
    from shipyard.spec import Signature, TensorSpec

_TEXT_KINDS = frozenset("OSU")


class Checked(dict[str, "npt.NDArray[Any]"]):
    """Arrays an :class:`InputChecker` returned, marked with the signature they fit.

    Checking them again against the same signature returns them as they are: the server
    checks each request before batching, and a batch of one reaches the runtime unchanged.
    """

    __slots__ = ("signature",)

    def __init__(self, arrays: dict[str, npt.NDArray[Any]], signature: Signature) -> None:
        super().__init__(arrays)
        self.signature = signature


def format_shape(shape: Sequence[int | None]) -> str:
    """``(N, 4)``: dynamic dimensions are written ``N``."""
    inner = ", ".join("N" if d is None else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


class _InputRule:
    __slots__ = ("dtype", "label", "name", "rank", "shape", "spec_dtype", "static")

    def __init__(self, spec: TensorSpec) -> None:
        self.name = spec.name
        self.spec_dtype = spec.dtype
        self.dtype: np.dtype[Any] | None = (
            None if spec.dtype is DType.BYTES else spec.dtype.to_numpy()
        )
        self.shape = spec.shape
        self.rank = len(spec.shape)
        self.static = tuple((i, d) for i, d in enumerate(spec.shape) if d is not None)
        self.label = format_shape(spec.shape)

    def check(self, value: Any) -> npt.NDArray[Any]:
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        shape = arr.shape
        if len(shape) != self.rank or any(shape[i] != d for i, d in self.static):
            hint = "Add a batch dimension." if len(shape) == self.rank - 1 else None
            raise SignatureMismatch(
                f"Input {self.name!r} must have shape {self.label}. Got {shape} instead.",
                hint=hint,
            )
        want = self.dtype
        if want is None:
            if arr.dtype.kind not in _TEXT_KINDS:
                raise SignatureMismatch(
                    f"Input {self.name!r} must be BYTES (strings). Got {arr.dtype.name} instead."
                )
            return arr if arr.dtype.kind == "O" else arr.astype(object)
        if arr.dtype == want:
            return arr
        if arr.dtype.kind in _TEXT_KINDS or not np.can_cast(arr.dtype, want, "same_kind"):
            raise SignatureMismatch(
                f"Input {self.name!r} must be {self.spec_dtype.value} "
                f"(or a type that casts safely to it). Got {arr.dtype.name} instead.",
                hint="Floats are not cast to integers, nor strings to numbers; convert first.",
            )
        return arr.astype(want)


class InputChecker:
    """Validates and casts inputs for one signature.

    Args:
        signature: The model's signature.
    """

    def __init__(self, signature: Signature) -> None:
        self._signature = signature
        self._rules = {spec.name: _InputRule(spec) for spec in signature.inputs}
        self._expected = sorted(self._rules)
        self._outputs = tuple(spec.name for spec in signature.outputs)
        self._output_set = frozenset(self._outputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Every output name, in signature order."""
        return self._outputs

    def check(self, inputs: Mapping[str, Any]) -> dict[str, npt.NDArray[Any]]:
        """Inputs as arrays of the signature's dtypes (safe casts applied).

        Raises:
            SignatureMismatch: names, dtype or shape do not fit.
        """
        if type(inputs) is Checked and inputs.signature is self._signature:
            return inputs
        rules = self._rules
        if len(inputs) != len(rules) or any(name not in rules for name in inputs):
            got = sorted(map(str, inputs))
            missing = [n for n in self._expected if n not in inputs]
            unknown = [n for n in got if n not in rules]
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if unknown:
                parts.append(f"unknown {unknown}")
            raise SignatureMismatch(
                f"Inputs must be named {self._expected}. Got {got} instead ({', '.join(parts)}).",
                hint="See the model's signature with `shipyard models show`.",
            )
        return Checked(
            {name: rules[name].check(value) for name, value in inputs.items()}, self._signature
        )

    def check_outputs(self, outputs: Sequence[str] | None) -> list[str]:
        """The output names to compute: all of them when ``outputs`` is None.

        Raises:
            SignatureMismatch: an unknown output name.
        """
        if outputs is None:
            return list(self._outputs)
        names = list(outputs)
        unknown = [n for n in names if n not in self._output_set]
        if unknown or not names:
            raise SignatureMismatch(
                f"Requested outputs must be among {list(self._outputs)}. Got {names} instead."
            )
        return names
