"""The graph ops: the one declared list that every backend is checked against.

Each :class:`OpSpec` names a graph op and says what a node of it holds: how many inputs, which
params (roles of tensors) it requires or may have, and which attrs it requires. The runtime's op
classes take these from here, the lowering and the ONNX emitter register per name from this list,
and tests/test_opset.py checks that all of them, and the op table of docs/FORMAT.md, agree.

To add a graph op:

1. declare it in :data:`OPSET` below (and the params a packed file stores in its float dtype in
   ``float_dtype_params``; bnncli.deploy.pack reads them from here);
2. lower it: a ``@lowers(ModuleType, ...)`` or ``@lowers_function(...)`` function in
   bnncli/deploy/lowering.py returning ``Lowered("Name", attrs, params)``;
3. emit it: an ``@emits("Name")`` method of ``_Emitter`` in bnncli/deploy/onnx_export.py;
4. run it: ``class Name(Op, op="Name")`` in bnncli/runtime/ops.py (``setup`` and ``__call__``);
5. document it: its row in the op table of docs/FORMAT.md (optional params marked ``?``).

Pure data: this module imports the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bnncli.graph.graph import Node


@dataclass(frozen=True)
class OpSpec:
    """One graph op: what its nodes read, the tensors and attributes they carry."""

    name: str
    doc: str
    arity: int | None = 1  # the number of inputs; None: one or more
    params: tuple[str, ...] = ()  # required tensor roles
    optional_params: tuple[str, ...] = ()
    attrs: tuple[str, ...] = ()  # required attributes (there are no optional ones)
    # Params a packed file stores in its float_dtype (float32 or float16); other float params stay float32.
    float_dtype_params: tuple[str, ...] = ()

    def mismatch(self, node: Node) -> str | None:
        """What about ``node``'s inputs, params or attrs departs from this spec, or None."""
        n = len(node.inputs)
        if self.arity is not None and n != self.arity:
            return f"takes {self.arity} input(s), not {n}"
        if self.arity is None and not n:
            return "takes at least one input"
        if set(node.params) - set(self.params) - set(self.optional_params) or set(self.params) - set(node.params):
            optional = f" and optionally {list(self.optional_params)}" if self.optional_params else ""
            return f"has params {sorted(node.params)}; expected {list(self.params)}{optional}"
        if set(node.attrs) != set(self.attrs):
            return f"has attributes {sorted(node.attrs)}; expected {list(self.attrs)}"
        return None


# stride and dilation are pairs; padding is a pair or "same" (TensorFlow's rule, bnncli.graph.padding).
_PAIRS = ("stride", "padding", "dilation")

OPSET: tuple[OpSpec, ...] = (
    OpSpec("Conv", "float convolution, zero padding, groups 1", params=("weight",), optional_params=("bias",),
           attrs=_PAIRS, float_dtype_params=("weight", "bias")),
    OpSpec("BinaryConv", "binarize, pad with pad_value, XNOR + popcount, then scale and bias", params=("weight",),
           optional_params=("in_threshold", "in_negate", "out_scale", "out_bias"),
           attrs=("in_channels", "out_channels", "kernel_size", *_PAIRS, "pad_value")),
    OpSpec("BatchNorm", "inference BatchNorm", params=("weight", "bias", "running_mean", "running_var"),
           attrs=("eps",)),
    OpSpec("Affine", "x * scale[c] + shift[c] (a folded BatchNorm)", params=("scale", "shift")),
    OpSpec("Relu", "max(x, 0)"),
    OpSpec("MaxPool", "max pooling, padding counts as -inf", attrs=("kernel_size", "stride", "padding")),
    OpSpec("AvgPool", "average pooling without padding", attrs=("kernel_size", "stride")),
    OpSpec("GlobalAvgPool", "mean over height and width, keeping them as 1"),
    OpSpec("Flatten", "[N, C, H, W] -> [N, C*H*W]"),
    OpSpec("Linear", "x @ weight.T + bias", params=("weight",), optional_params=("bias",),
           float_dtype_params=("weight", "bias")),
    OpSpec("Concat", "concatenation along channels", arity=None, attrs=("axis",)),
    OpSpec("Add", "elementwise sum of two inputs", arity=2),
    OpSpec("GroupConv", "float convolution in groups (depthwise when groups = channels), zero padding",
           params=("weight",), optional_params=("bias",), attrs=(*_PAIRS, "groups"),
           float_dtype_params=("weight", "bias")),
    OpSpec("Slice", "channels start to stop - 1 (MeliusNet's improvement blocks)", attrs=("axis", "start", "stop")),
    OpSpec("PRelu", "x where x >= 0, else x * slope[c]", params=("slope",)),
    OpSpec("Sigmoid", "1 / (1 + exp(-x))"),
    OpSpec("ChannelMul", "a feature map times a [N, C] value: x[n, c, h, w] * s[n, c] (Real-to-Binary Net's "
           "per-image scales)", arity=2),
)

SPECS: dict[str, OpSpec] = {s.name: s for s in OPSET}

# (op, role) of every tensor a packed file stores in its float_dtype.
FLOAT_DTYPE_PARAMS: frozenset[tuple[str, str]] = frozenset(
    (s.name, role) for s in OPSET for role in s.float_dtype_params)


def spec(name: str) -> OpSpec:
    """The spec of graph op ``name``; LookupError (a bug in bnncli, not in a file) when it is not declared."""
    try:
        return SPECS[name]
    except KeyError:
        raise LookupError(f"graph op {name!r} is not declared in bnncli/graph/opset.py "
                          f"(declared: {', '.join(SPECS)})") from None
