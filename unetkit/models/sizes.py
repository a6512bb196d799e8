"""Input/output size arithmetic shared by every network in :mod:`unetkit.models`.

A network describes one spatial axis by two rules, :meth:`SizeRules.axis_output_size`
(``None`` when that input size is not allowed) and :meth:`SizeRules.axis_min_input`;
everything else (checking a whole shape, inverting the map, naming the nearest
valid sizes in an error) is derived here once.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

Size = Union[int, Sequence[int]]


class SizeRules:
    """Mixin: size helpers derived from a per-axis rule."""

    def axis_output_size(self, size: int) -> Optional[int]:  # pragma: no cover - abstract
        """Output length along one axis for an input length, or ``None`` if invalid."""
        raise NotImplementedError

    def axis_min_input(self) -> int:  # pragma: no cover - abstract
        """A lower bound for searching valid input lengths."""
        raise NotImplementedError

    def size_rule(self) -> str:  # pragma: no cover - abstract
        """One sentence that says which sizes are valid, for error messages."""
        raise NotImplementedError

    @property
    def spatial_dims(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _axes(self, size: Size) -> list[int]:
        if isinstance(size, int):
            return [size] * self.spatial_dims
        axes = [int(s) for s in size]
        if len(axes) != self.spatial_dims:
            raise ValueError(
                f"expected {self.spatial_dims} spatial sizes for a {self.spatial_dims}D network, "
                f"got {tuple(axes)}"
            )
        return axes

    def is_valid_input_size(self, size: Size) -> bool:
        return all(self.axis_output_size(s) is not None for s in self._axes(size))

    def nearest_valid_input_sizes(self, size: int) -> tuple[Optional[int], Optional[int]]:
        """The largest valid length ``<= size`` (None if there is none) and the smallest ``>= size``."""
        below = next(
            (s for s in range(size, self.axis_min_input() - 1, -1) if self.axis_output_size(s)),
            None,
        )
        above = next(s for s in range(max(size, 1), size + 10_000) if self.axis_output_size(s))
        return below, above

    def check_input_size(self, size: Size) -> None:
        """Raise ``ValueError`` naming the nearest valid sizes if ``size`` is not a valid input."""
        problems = []
        for axis, s in enumerate(self._axes(size)):
            if self.axis_output_size(s) is None:
                below, above = self.nearest_valid_input_sizes(s)
                nearest = " or ".join(str(v) for v in (below, above) if v is not None)
                problems.append(f"axis {axis}: {s} is not valid, nearest valid sizes: {nearest}")
        if problems:
            raise ValueError(
                f"invalid input size {tuple(self._axes(size))} for {type(self).__name__}: "
                + "; ".join(problems)
                + f". {self.size_rule()}"
            )

    def output_size(self, input_size: Size) -> Union[int, tuple[int, ...]]:
        """Spatial output size for ``input_size`` (an int for every axis, or a tuple)."""
        self.check_input_size(input_size)
        out = tuple(self.axis_output_size(s) for s in self._axes(input_size))
        return out[0] if isinstance(input_size, int) else out  # type: ignore[return-value]

    def input_size_for(self, output_size: Size) -> Union[int, tuple[int, ...]]:
        """Smallest valid input size whose output is at least ``output_size`` on every axis."""
        sizes = []
        for target in self._axes(output_size):
            s = self.axis_min_input()
            while (self.axis_output_size(s) or 0) < target:
                s += 1
            sizes.append(s)
        return sizes[0] if isinstance(output_size, int) else tuple(sizes)

    def valid_input_sizes(self, min_size: int = 1, max_size: int = 1024) -> list[int]:
        """All valid input lengths along one axis in ``[min_size, max_size]``."""
        return [s for s in range(max(min_size, 1), max_size + 1) if self.axis_output_size(s)]

    def context(self) -> int:
        """Pixels lost per side along each axis (0 for same padding): the overlap-tile margin."""
        s = self.valid_input_sizes(self.axis_min_input(), self.axis_min_input() + 4096)[0]
        return (s - int(self.axis_output_size(s))) // 2  # type: ignore[arg-type]
