"""Channel-wise modules the lowering sees whole: slices and per-image channel scales.

* :class:`ChannelSlice`, ``x[:, start:stop]`` (graph op Slice). MeliusNet's improvement block adds
  a binary conv's output onto the last channels of its input: ``cat([x[:, :c - g], x[:, c - g:] + w])``
  (Larq Zoo writes it as ``x + pad(w)``).
* :class:`ChannelScale`, ``x * s[:, :, None, None]`` for a map ``x`` and an ``[N, C]`` value ``s``
  (graph op ChannelMul). Real-to-Binary Net scales each binary conv's output by factors that a
  small branch computes from the conv's real-valued input, per image and channel.
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


class ChannelScale(nn.Module):
    """``x * s[:, :, None, None]``: channel ``c`` of image ``n`` of an NCHW map times ``s[n, c]``."""

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        if x.dim() != 4 or s.dim() != 2 or s.shape != x.shape[:2]:
            raise ValueError(f"a channel scale takes an [N, C, H, W] map and [N, C] scales, not "
                             f"{list(x.shape)} and {list(s.shape)}")
        return x * s[:, :, None, None]
