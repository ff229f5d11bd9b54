"""The evaluator: walks a graph's nodes through a name -> array dict."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bnncli.errors import ArtifactError, DataError
from bnncli.graph.graph import Graph
from bnncli.runtime.context import Context, blas_single_threaded
from bnncli.runtime.ops import Add, BinaryConv, Concat, Conv, GroupConv, Linear, MaxPool, Op, Relu, build_op
from bnncli.runtime.ops import _ChannelAffine as ChannelAffine
from bnncli.runtime.plan import check_graph

# A value is packed for the binary convolutions reading it right after it is computed
# (Model._plan_prepacking) only up to this size, while it is still in the core's L2 cache; a larger
# one (a large batch) would be read from memory either way, and each reader packs its input itself.
FAN_OUT_MAX_BYTES = 1 << 20

# What a concatenation of a pooled chain (Model._plan_pooled_chains) holds instead of its channels:
# an array of the right shape over one float of memory, read-only (nothing reads it: its readers
# are binary convolutions given their packed input).
_NOTHING = np.zeros(1, np.float32)


def _owner(x: np.ndarray) -> Any:
    """The array that owns ``x``'s memory: its base, the base's base, ... (through the wrapper
    of an ``as_strided`` view too). Two values share memory only if they have one owner."""
    while True:
        base = x.base
        if isinstance(base, np.ndarray):
            x = base
        elif base is not None and isinstance(getattr(base, "base", None), np.ndarray):
            x = base.base
        else:
            return x


_STAND_INS: dict[tuple[int, ...], np.ndarray] = {}  # by shape, made once


def _stand_in(shape: tuple[int, ...]) -> np.ndarray:
    x = _STAND_INS.get(shape)
    if x is None:
        x = _STAND_INS[shape] = np.lib.stride_tricks.as_strided(_NOTHING, shape, (0,) * len(shape), writeable=False)
    return x


@dataclass(eq=False)
class PooledChain:
    """A dense block whose concatenated features are max pooled as they are computed (see
    Model._plan_pooled_chains): the ``pool``, the concatenations (``links``, by op id: how many
    of the ``parts`` each one's output is made of), the values concatenated in channel order,
    the channels of each part after the first (its producer's ``cout``), and the pool's affine."""

    pool: MaxPool
    links: dict[int, int]
    parts: list[str]
    counts: list[int]
    affine: tuple[np.ndarray, np.ndarray] | None
    readers: list[BinaryConv]  # the binary convolutions reading a concatenation of the chain


@dataclass(eq=False)
class _Pass:
    """One forward pass (Model.run): its values by name, how many later reads each has, the
    values it must keep (the outputs), and what the plans made at load time need on the way."""

    values: dict[str, np.ndarray]
    refcount: dict[str, int]
    keep: set[str]
    intermediates: bool
    channels: dict[str, int] = field(default_factory=dict)  # of the values packed for readers (_plan_prepacking)
    packed: dict[int, tuple[int, np.ndarray | None]] = field(default_factory=dict)  # by reader: segments packed, buffer
    chains: dict[int, _ChainPass | None] = field(default_factory=dict)  # by chain id: None where it concatenates
    stand_ins: set[int] = field(default_factory=set)  # ids of the values of concatenations not made (_stand_in)
    owners: dict[int, int] = field(default_factory=dict)  # live values by the id of their memory's owner (_owner)


@dataclass(eq=False)
class _ChainPass:
    """A pooled chain in one forward pass: its pooled map, filled part by part, and where."""

    pooled: np.ndarray
    counts: list[int]
    map_shape: tuple[int, int, int]  # (N, H, W) of every part
    pool_geometry: tuple[Any, int, int]  # the pool's (pads, Ho, Wo)
    done: int = 0  # parts pooled
    offset: int = 0  # channels pooled


def _to_internal(x: np.ndarray) -> np.ndarray:
    """NCHW -> the runtime's [C, N, H, W]."""
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3))


def _to_public(x: np.ndarray) -> np.ndarray:
    """The runtime's [C, N, H, W] -> NCHW; 2-D values are already [N, F]."""
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3)) if x.ndim == 4 else x


class Model:
    """A runnable graph with its metadata.

    ``model(x)`` takes a float32 NCHW batch (preprocessed as ``model.preprocessing`` says) and
    returns float32 logits ``[N, classes]``. ``model.run(x, intermediates=True)`` returns every
    value the graph computes, by name, in PyTorch's layout (for debugging against PyTorch).
    One forward pass runs at a time per model (calls from several threads take turns); the
    model's own thread pool parallelizes inside it.
    """

    def __init__(self, graph: Graph, meta: dict[str, Any] | None = None, threads: int | None = None,
                 backend: str | None = None) -> None:
        graph.check()
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise ArtifactError("the runtime runs graphs with one input and one output")
        self.graph = graph
        self.meta = dict(meta or {})
        self.ctx = Context(threads, backend)
        self.ops: list[Op] = [build_op(node, graph.tensors, self.ctx) for node in graph.nodes]
        self.plan = check_graph(graph, self.meta)  # the whole plan bounded, before any map is allocated
        self.in_channels = self._input_channels()
        self._readers_of = self._readers()
        self._plan_concat_growth()
        self._deferred = self._defer_relus()
        self._unbiased: set[int] = set()  # convolutions whose bias a max pool adds (_fuse_affines_into_pools)
        self._pool_affines = self._fuse_affines_into_pools()
        self._residuals = self._fuse_adds_into_binary_convs()
        self._in_place = self._plan_in_place_outputs()
        self._segments, self._packers = self._plan_prepacking()
        self._chains = self._plan_pooled_chains()
        self._chain_parts = {v: (chain, i) for chain in self._chains for i, v in enumerate(chain.parts)}
        self._chain_links = {link: chain for chain in self._chains for link in chain.links}
        self._chain_pools = {id(chain.pool): chain for chain in self._chains}
        self._fan_outs: dict[tuple, Any] = {}  # by (value, shape): the backend's fan-out, or None
        self._lock = threading.Lock()
        self._last_shape: tuple[int, ...] | None = None
        last = next((op for op in self.ops if graph.outputs[0] in op.node.outputs), None)
        classes = self.meta.get("class_names")
        if isinstance(last, Linear) and classes is not None and len(classes) != last.out_features:
            raise ArtifactError(f"the model has {last.out_features} outputs but {len(classes)} class names")

    def _readers(self) -> dict[str, list[Op]]:
        """The ops that read each value, in graph order."""
        readers: dict[str, list[Op]] = {}
        for op in self.ops:
            for v in op.node.inputs:
                readers.setdefault(v, []).append(op)
        return readers

    def _plan_concat_growth(self) -> None:
        """For each concatenation, whether it may extend its first input's buffer in place, and the
        channels later links of its chain add (see ops.Concat).

        Only the one concatenation that takes a value as its first input may extend that value's
        buffer: where two do (two branches of one prefix), each copies the prefix into a buffer of
        its own, since both would otherwise write their channels into the same place after it.
        The next link of a concatenation is that one extender of its output; the growth of a link
        is what the next one adds plus the next one's growth (0 where the chain ends, where a
        later link adds a map of unknown channels, or where no single extender exists). Ops are in
        graph order, so one pass from the end computes every link in time linear in the graph.
        """
        by_output = {op.node.outputs[0]: op for op in self.ops}
        extenders: dict[str, list[Concat]] = {}
        for op in self.ops:
            if isinstance(op, Concat):
                extenders.setdefault(op.node.inputs[0], []).append(op)
        for op in self.ops:
            if isinstance(op, Concat):
                op.may_extend = len(extenders[op.node.inputs[0]]) == 1
        for op in reversed(self.ops):
            if not isinstance(op, Concat):
                continue
            following = extenders.get(op.node.outputs[0], [])
            nxt = following[0] if len(following) == 1 else None
            added = [] if nxt is None else [getattr(by_output.get(v), "cout", None) for v in nxt.node.inputs[1:]]
            op.growth = 0 if nxt is None or any(a is None for a in added) else sum(added) + nxt.growth

    def _plan_in_place_outputs(self) -> dict[int, tuple[Concat, int]]:
        """Binary convolutions whose output only a concatenation reads (not as its first input):
        by op id, that concatenation and the input's index. Such a convolution writes its result
        straight into the buffer the concatenation returns (ops.Concat.reserve), which then copies
        nothing for it: a BinaryDenseNet layer's output is written once."""
        plan = {}
        for op in self.ops:
            out = op.node.outputs[0]
            readers = self._readers_of.get(out, [])
            if isinstance(op, BinaryConv) and out not in self.graph.outputs and len(readers) == 1 \
                    and isinstance(readers[0], Concat) and readers[0].node.inputs.count(out) == 1 \
                    and readers[0].node.inputs.index(out) > 0:
                plan[id(op)] = (readers[0], readers[0].node.inputs.index(out))
        return plan

    def _plan_prepacking(self) -> tuple[dict[int, list[str]], dict[str, list[tuple[BinaryConv, int]]]]:
        """Binary convolutions whose input is a concatenation (a BinaryDenseNet or MeliusNet layer
        reading its block so far), on a backend with fan-outs (``kernels.fan_out``): each value
        the concatenation is made of is binarized and packed for all such readers at once right
        after it is computed, while it is in the cache, into each reader's own packed input; the
        readers then read no float input (each layer of a dense block would read the whole block
        so far from memory and pack it).

        Returns, by reader id, the values its input is made of (in channel order), and by value,
        the readers it is packed for with its index among their segments. Only values computed by
        an op that runs as it is (not the graph's input, nor a deferred op's passed-through value).
        """
        if getattr(self.ctx.kernels, "fan_out", None) is None:
            return {}, {}
        by_output = {op.node.outputs[0]: op for op in self.ops}

        def flatten(value: str) -> list[str]:
            producer = by_output.get(value)
            if isinstance(producer, Concat):
                return [part for v in producer.node.inputs for part in flatten(v)]
            return [value]

        segments: dict[int, list[str]] = {}
        packers: dict[str, list[tuple[BinaryConv, int]]] = {}
        for op in self.ops:
            if not isinstance(op, BinaryConv) or not isinstance(by_output.get(op.node.inputs[0]), Concat):
                continue
            parts = flatten(op.node.inputs[0])
            if any(v not in by_output or id(by_output[v]) in self._deferred for v in parts):
                continue
            segments[id(op)] = parts
            for index, v in enumerate(parts):
                packers.setdefault(v, []).append((op, index))
        for op in self.ops:  # a dense block's first layer, reading the first of its values alone
            v = op.node.inputs[0]
            if isinstance(op, BinaryConv) and v in packers and id(op) not in segments:
                segments[id(op)] = [v]
                packers[v].append((op, 0))
        return segments, packers

    def _pack_for_readers(self, name: str, values: dict[str, np.ndarray], channels: dict[str, int],
                          packed: dict[int, tuple[int, np.ndarray | None]]) -> bool:
        """Pack the value just computed for its readers planned by _plan_prepacking (one fan-out
        per value and size, made on first use); a reader some segment of which cannot be packed so
        (a map above FAN_OUT_MAX_BYTES, which would no longer be in the cache) packs its whole
        input itself. Returns whether the value was packed."""
        x = values[name]
        channels[name] = x.shape[0] if x.ndim == 4 else -1
        readers = self._packers[name]
        entry = None
        if x.ndim == 4 and x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable \
                and x.nbytes <= FAN_OUT_MAX_BYTES:
            key = (name, x.shape)
            if key not in self._fan_outs:
                self._fan_outs[key] = self._make_fan_out(readers, x.shape, channels)
            entry = self._fan_outs[key]
        if entry is None:
            for reader, _ in readers:
                packed[id(reader)] = (-1, None)
            return False
        pack, buffers = entry
        pack(x)
        for (reader, _), buffer in zip(readers, buffers):
            done = packed.get(id(reader), (0, None))[0]
            packed[id(reader)] = (done + 1 if done >= 0 else -1, buffer)
        return True

    def _make_fan_out(self, readers: list[tuple[BinaryConv, int]], shape: tuple[int, ...], channels: dict[str, int]):
        """The backend's fan-out of a map of ``shape`` to ``readers`` ((pack, buffers), or None):
        each reader's first channel is the channels of its segments before this one."""
        count, n, h, w = shape
        targets = []
        for reader, index in readers:
            before = [channels.get(v, -1) for v in self._segments[id(reader)][:index]]
            if any(c < 0 for c in before):
                return None
            targets.append((reader.run, sum(before), reader.resolve_pads(h, w, reader.dilation)[0]))
        return self.ctx.kernels.fan_out(targets, n, h, w, count)

    def _plan_pooled_chains(self) -> list[PooledChain]:
        """Dense blocks whose concatenations only binary convolutions packed by fan-outs
        (_plan_prepacking) and one max pool read (a BinaryDenseNet transition, its BatchNorm fused
        into the pool by _fuse_affines_into_pools): each part of the block is pooled into its
        channels of the pool's output right after it is computed and packed, while it is in the
        cache, and the concatenations are never written. Each layer's output then goes to a
        buffer the next layer reuses, in the cache, instead of the block's buffer in memory
        (writing 800 KB to memory cost a 56 x 56 layer of BinaryDenseNet28 more than its
        popcounts). A forward pass without intermediates uses a chain when every part can be
        packed for its readers (_start_chain); else it concatenates as the graph says.

        Requires the parts to be computed in channel order by ops that run as they are, each
        after the first by an op with a known ``cout``; the max pool computes each channel from
        that channel alone, so pooling the parts gives the pool of the concatenation.
        """
        if not self._segments:
            return []
        by_output = {op.node.outputs[0]: op for op in self.ops}
        position = {id(op): i for i, op in enumerate(self.ops)}
        chains = []
        for pool in self.ops:
            if not isinstance(pool, MaxPool):
                continue
            value, between = pool.node.inputs[0], []
            producer = by_output.get(value)
            while producer is not None and id(producer) in self._deferred and not isinstance(producer, Concat):
                between.append(producer)  # the affine (or ReLU) the pool applies
                value = self._deferred[id(producer)]
                producer = by_output.get(value)
            if not isinstance(producer, Concat) or any(self._sole_reader(op, (MaxPool, ChannelAffine, Relu)) is None
                                                         for op in between):
                continue
            links: dict[int, int] = {}
            parts: list[str] = []
            if not self._walk_concatenations(value, by_output, links, parts):
                continue
            allowed = {*links, *(id(op) for op in between), id(pool)}
            readers = [reader for link in self.ops if id(link) in links
                       for reader in self._readers_of.get(link.node.outputs[0], []) if id(reader) not in allowed]
            readers_ok = all(isinstance(reader, BinaryConv) and id(reader) in self._segments for reader in readers)
            producers = [by_output.get(v) for v in parts]
            if not readers_ok or len(set(parts)) != len(parts) \
                    or any(op is None or id(op) in self._deferred for op in producers) \
                    or any(not isinstance(getattr(op, "cout", None), int) for op in producers[1:]) \
                    or any(op.node.outputs[0] in self.graph.outputs for op in self.ops if id(op) in links) \
                    or [position[id(op)] for op in producers] != sorted(position[id(op)] for op in producers):  # type: ignore[arg-type]
                continue
            chains.append(PooledChain(pool, links, parts, [op.cout for op in producers[1:]],  # type: ignore[union-attr]
                                      self._pool_affines.get(id(pool)), readers))  # type: ignore[arg-type]
        return chains

    @staticmethod
    def _walk_concatenations(value: str, by_output: dict[str, Op], links: dict[int, int], parts: list[str]) -> bool:
        """Add the values ``value`` concatenates to ``parts`` in channel order, and each
        concatenation on the way to ``links`` (by op id: the parts its output is made of); False
        where one concatenation is reached twice (not a chain)."""
        op = by_output.get(value)
        if not isinstance(op, Concat):
            parts.append(value)
            return True
        if id(op) in links or not all(Model._walk_concatenations(v, by_output, links, parts) for v in op.node.inputs):
            return False
        links[id(op)] = len(parts)
        return True

    def _start_chain(self, chain: PooledChain, x: np.ndarray, channels: dict[str, int]) -> _ChainPass | None:
        """A pass of ``chain`` whose first part is ``x`` (just computed and packed), or None where
        some part could not be packed for its readers (a larger map, another dtype): the
        concatenations then run."""
        if x.ndim != 4 or x.dtype != np.float32:
            return None
        _, n, h, w = x.shape
        counts = [x.shape[0], *chain.counts]
        if any(4 * c * n * h * w > FAN_OUT_MAX_BYTES for c in counts):
            return None
        if not all(any(r is reader for r, _ in self._packers.get(v, ())) for reader in chain.readers
                   for v in self._segments[id(reader)]):
            return None  # (every reader must get its whole input packed)
        sizes = dict(channels)
        sizes.update(zip(chain.parts, counts))
        for part, count in zip(chain.parts, counts):
            readers = self._packers.get(part)
            if not readers:
                continue
            key = (part, (count, n, h, w))
            if key not in self._fan_outs:
                self._fan_outs[key] = self._make_fan_out(readers, key[1], sizes)
            if self._fan_outs[key] is None:
                return None
        geometry = chain.pool.resolve_pads(h, w)
        pooled = self.ctx.empty((sum(counts), n, geometry[1], geometry[2]))
        return _ChainPass(pooled, counts, (n, h, w), geometry)

    def _pool_part(self, chain: PooledChain, state: _ChainPass, index: int, x: np.ndarray, packed: bool) -> None:
        """Pool part ``index`` of a chain (``x``, computed and, where it has readers, ``packed``)
        into its channels of the chain's pooled map."""
        count = state.counts[index]
        if x.shape != (count, *state.map_shape):
            link = next(op for op in self.ops if id(op) in chain.links)
            link.fail("expects feature maps of one batch and spatial size")
        if index != state.done or (chain.parts[index] in self._packers and not packed):
            raise RuntimeError(f"pooled chain of {chain.pool.node.name!r}: part {index} out of order or not packed")
        a, b = state.offset, state.offset + count
        affine = None if chain.affine is None else (chain.affine[0][a:b], chain.affine[1][a:b])
        pads, ho, wo = state.pool_geometry
        self.ctx.kernels.max_pool(x, chain.pool.kernel, chain.pool.stride, pads, (ho, wo), chain.pool.relu,
                                  state.pooled[a:b], affine)
        state.done, state.offset = index + 1, b

    def _in_place_target(self, op: Op, x: np.ndarray, values: dict[str, np.ndarray]) -> np.ndarray | None:
        """Where ``op`` (planned by _plan_in_place_outputs) may write its output, or None."""
        concat, index = self._in_place[id(op)]
        before = [values.get(v) for v in concat.node.inputs[:index]]
        if any(b is None or b.ndim != 4 or b.dtype != np.float32 for b in before):
            return None
        shape = op.output_shape(x)
        if any(b.shape[1:] != shape[1:] for b in before):
            return None  # the concatenation reports the mismatch
        return concat.reserve(before, shape[0])

    def _defer_relus(self) -> dict[int, str]:
        """Relus read only by a max pool, which then applies them to its (smaller) output (see ops.MaxPool).

        Returns the deferred ops: by op id, the value a forward pass without intermediates passes
        through as the op's output (here the Relu's input); one with intermediates still runs every
        op, so every value keeps its meaning. The fusions below add to it.
        """
        deferred = {}
        for op in self.ops:
            pool = self._sole_reader(op, MaxPool)
            if isinstance(op, Relu) and pool is not None and pool.node.inputs == op.node.outputs:
                pool.relu = True
                deferred[id(op)] = op.node.inputs[0]
        return deferred

    def _sole_reader(self, op: Op, kind: type) -> Op | None:
        """The op of type ``kind`` that is the only reader of ``op``'s output (which is not a graph
        output and is that reader's only input of its kind), else None."""
        out = op.node.outputs[0]
        readers = self._readers_of.get(out, [])
        if out in self.graph.outputs or len(readers) != 1 or not isinstance(readers[0], kind):
            return None
        return readers[0] if readers[0].node.inputs.count(out) == 1 else None

    def _fuse_affines_into_pools(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Affines (folded BatchNorms) read only by a max pool, which then applies them to each tap
        (ops.MaxPool, ``affine=``): a BinaryDenseNet transition reads its large map once. Likewise
        the bias of a convolution read only by a max pool (through a Relu the pool applies or not):
        the convolution runs without it (``bias=False``). Also a Relu that only reads a max pool's
        output runs in the pool (``relu``: the ReLU of the max is the max of the ReLUs). Returns the
        affine of each such pool by op id; the affines and relus are deferred (a forward pass with
        intermediates runs every op as it is)."""
        fused = {}
        for op in self.ops:
            pool = self._sole_reader(op, MaxPool)
            relu = self._sole_reader(op, Relu)
            if pool is None and relu is not None and id(relu) in self._deferred:  # a Relu the pool applies
                pool = self._sole_reader(relu, MaxPool)
            if isinstance(op, ChannelAffine) and pool is not None and pool.node.inputs == op.node.outputs:
                fused[id(pool)] = (op.scale, op.shift)
                self._deferred[id(op)] = op.node.inputs[0]
            elif isinstance(op, Conv) and op.layer.bias is not None and pool is not None and id(pool) not in fused:
                # A convolution's bias, added by the pool to each tap (x * 1 + b is x + b exactly): the
                # stem's bias then costs no pass over its largest map.
                fused[id(pool)] = (np.ones_like(op.layer.bias), op.layer.bias)
                self._unbiased.add(id(op))
            relu = self._sole_reader(op, Relu)
            if isinstance(op, MaxPool) and relu is not None:
                op.relu = True
                self._deferred[id(relu)] = relu.node.inputs[0]
        return fused

    def _fuse_adds_into_binary_convs(self) -> dict[int, Add]:
        """Binary convolutions whose output only an Add reads (a ResNet block's residual sum), where
        the Add's other input is computed before the convolution: by op id, that Add, whose sum the
        convolution's epilogue then writes (``residual=``), in place into the residual when nothing
        reads it later; the Add itself is deferred."""
        fused = {}
        ready = set(self.graph.inputs)  # values computed before the op at hand
        for op in self.ops:
            add = self._sole_reader(op, Add)
            if isinstance(op, BinaryConv) and add is not None \
                    and all(v in ready for v in add.node.inputs if v != op.node.outputs[0]):
                fused[id(op)] = add
                self._deferred[id(add)] = op.node.outputs[0]  # the convolution writes the sum
            ready.update(op.node.outputs)
        return fused

    def _run_with_residual(self, op: BinaryConv, x: np.ndarray, p: _Pass, prepacked: np.ndarray | None = None
                           ) -> np.ndarray:
        """``op(x) + residual`` (see _fuse_adds_into_binary_convs), into the residual's buffer when it is dead after."""
        add = self._residuals[id(op)]
        name = next(v for v in add.node.inputs if v != op.node.outputs[0])
        values, refcount, keep = p.values, p.refcount, p.keep
        residual = values[name]
        shape = op.output_shape(x)
        if residual.shape != shape:
            add.fail(f"adds arrays of different shapes {list(shape)} and {list(residual.shape)}")
        # In place only where nothing reads the residual's memory after this convolution and its Add
        # (both kernels read their whole input before they write their output, so it may be ``x``).
        def later_reads(value: str) -> int:
            return refcount[value] - op.node.inputs.count(value) - add.node.inputs.count(value)

        in_place = (name not in keep and name not in self.graph.inputs and later_reads(name) == 0
                    and residual.flags.writeable and residual.flags.c_contiguous and residual.dtype == np.float32
                    and (p.owners.get(id(_owner(residual))) == 1  # no other live view of its memory
                         or all(later_reads(k) == 0 and k not in keep for k, v in values.items()
                                if k != name and np.may_share_memory(residual, v))))
        return op(x, out=residual if in_place else None, residual=residual, prepacked=prepacked)

    def _dead_after(self, op: Op, values: dict[str, np.ndarray], refcount: dict[str, int], keep: set[str]) -> bool:
        """True when ``op`` may overwrite its first input: no later node reads it, it is not a
        graph input or output (the caller's array, or what it gets back), and no other live
        value shares its memory (a deferred ReLU's alias, a concatenation's buffer)."""
        name = op.node.inputs[0]
        if refcount[name] != 1 or name in keep or name in self.graph.inputs:
            return False
        x = values[name]
        return x.flags.writeable and not any(np.may_share_memory(x, v) for k, v in values.items() if k != name)

    def _release(self, name: str, p: _Pass) -> None:
        """Drop a value no later node reads; its buffer goes back to the context for reuse unless
        it is the caller's input or another live value is a view of the same memory (counted by
        owner, :func:`_owner`: a deferred ReLU's alias, a concatenation's prefix)."""
        x = p.values.pop(name)
        owner = id(_owner(x))
        left = p.owners[owner] - 1
        if left:
            p.owners[owner] = left
            return
        del p.owners[owner]
        if name not in self.graph.inputs:
            self.ctx.release(x)

    def _evaluate(self, op: Op, p: _Pass) -> np.ndarray:
        """The value ``op`` computes in the pass ``p``, by the plan made at load time (without
        intermediates) or as the op is (with them)."""
        values, inter = p.values, p.intermediates
        args = [values[v] for v in op.node.inputs]
        ready = p.packed.get(id(op)) if not inter else None
        chain = self._chain_links.get(id(op)) if not inter else None
        state = p.chains.get(id(chain)) if chain is not None else None
        pooling = self._chain_pools.get(id(op)) if not inter else None
        part = self._chain_parts.get(op.node.outputs[0]) if not inter else None
        # A part of a pooled chain is written to a buffer of its own (reused, in the cache).
        in_place = id(op) in self._in_place and (part is None or p.chains.get(id(part[0])) is None)
        if chain is not None and state is not None:  # a concatenation not made (pooled chain)
            n, h, w = state.map_shape
            stand_in = _stand_in((sum(state.counts[:chain.links[id(op)]]), n, h, w))
            p.stand_ins.add(id(stand_in))
            return stand_in
        if pooling is not None and p.chains.get(id(pooling)) is not None:
            state = p.chains[id(pooling)]
            assert state is not None and state.done == len(pooling.parts)
            return state.pooled
        if ready is not None and ready[0] == len(self._segments[id(op)]):
            if id(op) in self._residuals:
                return self._run_with_residual(op, args[0], p, ready[1])
            return op(*args, out=self._in_place_target(op, args[0], values) if in_place else None, prepacked=ready[1])
        if not inter and id(op) in self._deferred:
            return values[self._deferred[id(op)]]
        if p.stand_ins and any(id(x) in p.stand_ins for x in args):
            raise RuntimeError(f"node {op.node.name!r} reads a concatenation that was not made")
        if not inter and id(op) in self._residuals:
            return self._run_with_residual(op, args[0], p)
        if not inter and id(op) in self._pool_affines:
            return op(*args, affine=self._pool_affines[id(op)])
        if not inter and id(op) in self._unbiased:
            return op(*args, bias=False)
        if not inter and op.overwrites_first and self._dead_after(op, values, p.refcount, p.keep):
            return op(*args, out=args[0])
        if in_place:
            return op(*args, out=self._in_place_target(op, args[0], values))
        return op(*args)

    def _after(self, op: Op, p: _Pass) -> None:
        """What follows ``op`` in a pass without intermediates: its value packed for its readers and
        pooled into its chain where planned, and the values no later node reads dropped (their
        buffers kept for reuse)."""
        if p.intermediates:
            return
        out = op.node.outputs[0]
        done = out in self._packers and self._pack_for_readers(out, p.values, p.channels, p.packed)
        part = self._chain_parts.get(out)
        if part is not None:
            chain, index = part
            if index == 0:
                p.chains[id(chain)] = self._start_chain(chain, p.values[out], p.channels)
            state = p.chains.get(id(chain))
            if state is not None:
                self._pool_part(chain, state, index, p.values[out], done)
        owner = id(_owner(p.values[out]))
        p.owners[owner] = p.owners.get(owner, 0) + 1
        for v in op.node.inputs:
            p.refcount[v] -= 1
            if p.refcount[v] == 0 and v not in p.keep:
                self._release(v, p)

    def _input_channels(self) -> int | None:
        """Channels the first convolution reading the graph input expects (checked on every call)."""
        for op in self.ops:
            if self.graph.inputs[0] in op.node.inputs and isinstance(op, (Conv, GroupConv, BinaryConv)):
                return op.cin
        return None

    @property
    def arch(self) -> str | None:
        return self.meta.get("arch")

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.get("class_names") or [])

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.meta.get("preprocessing") or {})

    @property
    def threads(self) -> int:
        return self.ctx.threads

    @property
    def backend(self) -> str:
        """The kernels binary convolutions run on: ``numpy`` or ``numba`` (bnncli.runtime.backends)."""
        return self.ctx.backend

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)[self.graph.outputs[0]]

    def run(self, x: np.ndarray, intermediates: bool = False) -> dict[str, np.ndarray]:
        """Evaluate the graph; return the output (and with ``intermediates`` every value) by name."""
        x = np.asarray(x)
        if x.dtype.kind not in "fiu" or x.ndim != 4:
            raise DataError(f"input must be a float32 array [N, C, H, W], got {x.dtype} with shape {list(x.shape)}")
        if x.shape[0] == 0:
            raise DataError("the input batch holds no images (a batch of 0)")
        if self.in_channels is not None and x.shape[1] != self.in_channels:
            raise DataError(f"input has {x.shape[1]} channels; the model takes {self.in_channels}")
        values: dict[str, np.ndarray] = {self.graph.inputs[0]: _to_internal(x.astype(np.float32, copy=False))}
        refcount: dict[str, int] = {}
        for op in self.ops:
            for v in op.node.inputs:
                refcount[v] = refcount.get(v, 0) + 1
        state = _Pass(values, refcount, set(self.graph.outputs), intermediates)
        state.owners[id(_owner(values[self.graph.inputs[0]]))] = 1
        with self._lock, blas_single_threaded():
            if x.shape != self._last_shape:  # buffers of another input size would only sit there
                self.ctx.drop_buffers()
                self._fan_outs.clear()
                self._last_shape = x.shape
            self.ctx.arena.clear()
            for op in self.ops:
                values[op.node.outputs[0]] = self._evaluate(op, state)
                self._after(op, state)
            self.ctx.arena.clear()
        if intermediates:
            return {k: _to_public(v) for k, v in values.items()}
        return {k: _to_public(values[k]) for k in self.graph.outputs}

