"""Channel slices: ``x[:, start:stop]`` as a module, so the lowering sees it (graph op Slice).

MeliusNet's improvement block adds a binary conv's output onto the last channels of its input:
``cat([x[:, :c - g], x[:, c - g:] + w])`` (Larq Zoo writes it as ``x + pad(w)``).
"""

from __future__ import annotations

from torch import Tensor, nn


class ChannelSlice(nn.Module):
    """Channels ``start`` to ``stop - 1`` of an NCHW map."""

    def __init__(self, start: int, stop: int) -> None:
        super().__init__()
        if not 0 <= start < stop:
            raise ValueError(f"a channel slice needs 0 <= start < stop, not {start}, {stop}")
        self.start = start
        self.stop = stop

    def forward(self, x: Tensor) -> Tensor:
        return x[:, self.start:self.stop]

    def extra_repr(self) -> str:
        return f"{self.start}:{self.stop}"
