"""The whole plan of a model, per image, before it runs: its largest value, the memory its live
values need at the worst point, and its multiply-accumulates; refused above :data:`LIMITS`.

Each op of a model file is bounded on its own (bnncli.graph.graph: windows, padding, tensor
sizes), but a graph can compound them: 24 nodes of ``Concat(x, x)`` double the channels 24
times in 2 KB, one Concat can list the same map 400,000 times, a 1x1 conv can ask for 2^20
output channels, and "same"-sized padding grows a map over many dilated layers. So the model's
shapes are propagated from its input size (its preprocessing's ``image_size``) through every
node, the values' lifetimes give the live memory, and a model beyond the limits is refused at
load with one line, before any buffer is allocated. The limits are far above every real model:
the costliest registry model at 224 px needs 11 MiB of live values and 8 G MACs per image.

:func:`plan_steps` is the generic part (named values, each with its size and its readers), so
the ONNX path (bnncli.artifacts.onnx_file) plans its graphs by the same rules. NumPy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bnncli.errors import ArtifactError
from bnncli.graph import padding as P
from bnncli.graph.graph import Graph

# Per image, float32 values: no single value above 1 GiB, no more than 4 GiB live at once, at most
# 2^36 (69 G) float multiply-accumulates and 2^38 (275 G) binary ones (64 to a machine word).
# The costliest registry model, BinaryDenseNet37-dilated, needs 5 MiB, 11 MiB, 0.5 G float and
# 8 G binary at 224 px (over 30 times below), and still fits at 1024 px (the largest input a file
# may ask for is 2048 px, where the largest BinaryDenseNets, at 540-650 G binary, are refused).
MAX_VALUE_BYTES = 1 << 30
MAX_LIVE_BYTES = 4 << 30
MAX_MACS = 1 << 36
MAX_BINARY_MACS = 1 << 38
LIMITS = {"largest value (bytes)": MAX_VALUE_BYTES, "live values (bytes)": MAX_LIVE_BYTES,
          "float multiply-accumulates": MAX_MACS, "binary multiply-accumulates": MAX_BINARY_MACS}
# The input size planned for when a model does not state one.
DEFAULT_IMAGE_SIZE = 224


@dataclass(frozen=True)
class Step:
    """One node: the value it writes (``elements`` per image, 4 bytes each), the values it reads,
    and its multiply-accumulates per image."""

    name: str
    output: str
    inputs: tuple[str, ...]
    elements: int
    macs: int = 0
    binary_macs: int = 0


@dataclass(frozen=True)
class Plan:
    """Per image: the largest value (bytes, and which node writes it), the most bytes live at
    once, and the multiply-accumulates of the whole graph."""

    largest_value: int
    largest_node: str
    live_bytes: int
    macs: int
    binary_macs: int = 0

    def check(self, image_size: int | None = None) -> Plan:
        """Raise ArtifactError, one line naming the measure and the limit, when above :data:`LIMITS`."""
        at = f" at {image_size} px" if image_size else ""
        if self.largest_value > MAX_VALUE_BYTES:
            raise ArtifactError(f"node {self.largest_node!r} writes {_size(self.largest_value)} per image{at}, more "
                                f"than the {_size(MAX_VALUE_BYTES)} bnncli allows one value")
        if self.live_bytes > MAX_LIVE_BYTES:
            raise ArtifactError(f"the model needs {_size(self.live_bytes)} of live values per image{at}, more than "
                                f"the {_size(MAX_LIVE_BYTES)} bnncli allows")
        for count, limit, kind in ((self.macs, MAX_MACS, "float"), (self.binary_macs, MAX_BINARY_MACS, "binary")):
            if count > limit:
                raise ArtifactError(f"the model computes {count:.3g} {kind} multiply-accumulates per image{at}, "
                                    f"more than the {limit:.3g} bnncli allows")
        return self


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 1 << 30 else f"{n / 2**20:.1f} MiB"


def plan_steps(steps: Sequence[Step], inputs: dict[str, int], outputs: Iterable[str]) -> Plan:
    """The plan of ``steps`` in order, from graph ``inputs`` (name -> elements per image): a value
    lives from the step that writes it to the last step that reads it (graph outputs to the end);
    while a step runs, its inputs and its output are live together."""
    last_read: dict[str, int] = {}
    for i, step in enumerate(steps):
        for v in step.inputs:
            last_read[v] = i
    keep = set(outputs)
    sizes = {name: 4 * n for name, n in inputs.items()}
    live = sum(sizes.values())
    peak, largest, largest_node, macs, binary = live, max(sizes.values(), default=0), "input", 0, 0
    for i, step in enumerate(steps):
        size = 4 * step.elements
        sizes[step.output] = size
        live += size
        peak = max(peak, live)
        if size > largest:
            largest, largest_node = size, step.name
        macs += step.macs
        binary += step.binary_macs
        for v in set(step.inputs):
            if last_read.get(v) == i and v not in keep and v in sizes:
                live -= sizes.pop(v)
    return Plan(largest, largest_node, peak, macs, binary)


def _hw(node, h: int, w: int, kernel: tuple[int, int]) -> tuple[int, int]:
    """A windowed node's output size for an ``h`` x ``w`` input (at least 1: a too small input fails when run)."""
    stride = tuple(node.attrs.get("stride", (1, 1)))
    dilation = tuple(node.attrs.get("dilation", (1, 1)))
    padding = node.attrs.get("padding", (0, 0))
    pads = P.resolve(padding if padding == P.SAME else tuple(padding), (h, w), kernel, stride, dilation)
    ho, wo = P.output_hw((h, w), kernel, stride, pads, dilation)
    return max(ho, 1), max(wo, 1)


def graph_steps(graph: Graph, channels: int, image_size: int) -> tuple[list[Step], dict[str, int]]:
    """The steps of a runtime graph (ops validated already) for one ``channels`` x ``image_size``
    squared image, and its input's elements. Shapes are (C, H, W), or (F,) after Flatten."""
    shapes: dict[str, tuple[int, ...]] = {graph.inputs[0]: (channels, image_size, image_size)}
    steps = []
    for node in graph.nodes:
        xs = [shapes.get(v, (1, 1, 1)) for v in node.inputs]
        x = xs[0] if xs else (1, 1, 1)
        macs = 0
        out: tuple[int, ...]
        if node.op in ("Conv", "GroupConv", "BinaryConv") and len(x) == 3:
            if node.op in ("Conv", "GroupConv"):  # a grouped conv's weight is [Cout, Cin / groups, kh, kw]
                cout, cin, kh, kw = graph.tensor(node, "weight").shape
            else:
                cout, cin = node.attrs["out_channels"], node.attrs["in_channels"]
                kh, kw = node.attrs["kernel_size"]
            ho, wo = _hw(node, x[1], x[2], (kh, kw))
            out = (int(cout), ho, wo)
            macs = int(cout) * ho * wo * int(cin) * int(kh) * int(kw)
        elif node.op in ("MaxPool", "AvgPool") and len(x) == 3:
            out = (x[0], *_hw(node, x[1], x[2], tuple(node.attrs["kernel_size"])))
        elif node.op == "GlobalAvgPool" and len(x) == 3:
            out = (x[0], 1, 1)
        elif node.op == "Flatten":
            out = (_prod(x),)
        elif node.op == "Linear":
            features, width = graph.tensor(node, "weight").shape
            out, macs = (int(features),), int(features) * int(width)
        elif node.op == "Concat" and len(x) == 3:
            out = (sum(s[0] for s in xs), x[1], x[2])
        elif node.op == "Slice" and len(x) == 3:  # a view: no memory of its own, but its readers see its size
            start, stop = int(node.attrs["start"]), int(node.attrs["stop"])
            out = (max(0, min(stop, x[0]) - max(start, 0)), x[1], x[2])
        else:  # elementwise: BatchNorm, Affine, Relu, Add
            out = x
        shapes[node.outputs[0]] = out
        binary = node.op == "BinaryConv"
        steps.append(Step(node.name, node.outputs[0], tuple(node.inputs), _prod(out), 0 if binary else macs,
                          macs if binary else 0))
    return steps, {graph.inputs[0]: _prod(shapes[graph.inputs[0]])}


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def graph_plan(graph: Graph, channels: int = 3, image_size: int | None = None) -> Plan:
    """The plan of a runtime graph for one image of ``image_size`` (default :data:`DEFAULT_IMAGE_SIZE`)."""
    steps, inputs = graph_steps(graph, channels, image_size or DEFAULT_IMAGE_SIZE)
    return plan_steps(steps, inputs, graph.outputs)


def check_graph(graph: Graph, meta: dict | None = None) -> Plan:
    """:func:`graph_plan` at the size the model's preprocessing states, checked against :data:`LIMITS`."""
    pp = (meta or {}).get("preprocessing") or {}
    size: int = pp["image_size"] if isinstance(pp.get("image_size"), int) else DEFAULT_IMAGE_SIZE
    channels: int = pp["channels"] if pp.get("channels") in (1, 3) else 3
    return graph_plan(graph, channels, size).check(size)
