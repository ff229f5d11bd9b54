"""The bit layout of binary tensors, as the packed file (docs/FORMAT.md) and every backend use it.

* sign(x) = +1 if x >= 0 else -1, so sign(0) = +1.
* Bit polarity: bit 1 means +1, bit 0 means -1.
* Packed axis: the input channel. Channel ``c`` is bit ``c % B`` (least significant first) of
  word ``c // B`` of a little-endian unsigned word of ``B`` bits; bits past the last channel
  ("tail bits") are 0 in weights and activations alike, so they never count as a mismatch.
* Files store weights in 32-bit words (:data:`FILE_WORD_BITS`); the kernels compute on 64-bit
  words (:data:`WORD_BITS`), :func:`widen_words` turns one into the other.

For +-1 vectors a, b of n channels, ``dot(a, b) = n - 2 * popcount(bits(a) XOR bits(b))``.

This module imports NumPy only.
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 64  # the kernels' word
FILE_WORD_BITS = 32  # the packed file's word


def n_words(channels: int, word_bits: int = WORD_BITS) -> int:
    return -(-channels // word_bits)


def pack_bits(bits: np.ndarray, word_bits: int = WORD_BITS) -> np.ndarray:
    """Pack a boolean array along its last axis into little-endian words (tail bits 0)."""
    bits = np.asarray(bits, dtype=bool)
    c = bits.shape[-1]
    nw = n_words(c, word_bits)
    if nw * word_bits != c:
        pad = np.zeros(bits.shape[:-1] + (nw * word_bits - c,), dtype=bool)
        bits = np.concatenate([bits, pad], axis=-1)
    packed = np.packbits(np.ascontiguousarray(bits), axis=-1, bitorder="little")
    return packed.view(f"<u{word_bits // 8}").astype(f"u{word_bits // 8}", copy=False)


def unpack_bits(words: np.ndarray, channels: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: a boolean array with ``channels`` entries on the last axis."""
    words = np.ascontiguousarray(words)
    le = words.astype(words.dtype.newbyteorder("<"), copy=False)
    bits = np.unpackbits(le.view(np.uint8), axis=-1, bitorder="little")
    return bits[..., :channels].astype(bool)


def tail_bits_clear(words: np.ndarray, channels: int) -> bool:
    """True when every bit past ``channels`` in the packed last axis is 0."""
    word_bits = words.dtype.itemsize * 8
    full = words.shape[-1] * word_bits
    if full == channels:
        return True
    bits = np.unpackbits(np.ascontiguousarray(words).astype(words.dtype.newbyteorder("<"), copy=False)
                         .view(np.uint8), axis=-1, bitorder="little")
    return not bits[..., channels:].any()


def widen_words(words32: np.ndarray) -> np.ndarray:
    """uint32 words on the last axis -> uint64 words (the same bits; a zero word pads odd counts)."""
    words32 = np.ascontiguousarray(words32, dtype="<u4")
    if words32.shape[-1] % 2:
        pad = np.zeros(words32.shape[:-1] + (1,), dtype="<u4")
        words32 = np.concatenate([words32, pad], axis=-1)
    return np.ascontiguousarray(words32).view("<u8").astype(np.uint64, copy=False)


def valid_bits_words(channels: int) -> np.ndarray:
    """uint64 words with exactly the first ``channels`` bits set: the packed form of all +1."""
    return pack_bits(np.ones(channels, dtype=bool))
