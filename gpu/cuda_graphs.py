"""CUDA graphs for the decode step, one per batch-size bucket (and for packed prefill passes, one per
row bucket).

PyCUDA has no graph API and spends ~8 us of host time per launch, which would cap a ~250-kernel decode
step far below what the GPU can do. So the step's launches are captured with cuda-bindings on the
PyCUDA stream's handle (`cuStreamBeginCapture` .. `cuStreamEndCapture`), instantiated once, and replayed
with one `cuGraphLaunch`. The step reads its token ids, positions and slots from fixed device buffers,
so one graph serves every step of its batch size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

from .errors import EngineError

logger = logging.getLogger(__name__)


def driver():
    """cuda-bindings' driver module (ImportError where it is missing)."""
    try:
        from cuda.bindings import driver
    except ImportError:  # cuda-python < 12.6 spelled it `from cuda import cuda`
        from cuda import cuda as driver
    return driver


class GraphError(EngineError):
    """Capturing, instantiating or launching a CUDA graph failed."""


class DecodeGraphs:
    """Instantiated graphs keyed by batch size (or any key: ("prefill", rows)), all on one stream."""

    def __init__(self, stream_handle: int):
        self.cu = driver()
        self.stream = self.cu.CUstream(stream_handle)
        self._execs: dict[Hashable, tuple] = {}  # bucket -> (graph, graph exec)

    def _check(self, result, what: str):
        err = result[0]
        if err != self.cu.CUresult.CUDA_SUCCESS:
            raise GraphError(f"{what} failed: {err}")
        return result[1] if len(result) > 1 else None

    def __contains__(self, bucket: Hashable) -> bool:
        return bucket in self._execs

    def keys(self) -> set[Hashable]:
        """The keys of the graphs captured so far."""
        return set(self._execs)

    def capture(self, bucket: Hashable, enqueue: Callable[[], None], what: str) -> None:
        """Record what `enqueue()` launches on the stream (nothing runs) and instantiate it; `what` names
        it in the log and in errors."""
        cu = self.cu
        mode = cu.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
        self._check(cu.cuStreamBeginCapture(self.stream, mode), "cuStreamBeginCapture")
        try:
            enqueue()
        finally:
            graph = self._check(cu.cuStreamEndCapture(self.stream), f"capturing the {what}")
        graph_exec = self._check(cu.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")
        self._execs[bucket] = (graph, graph_exec)
        logger.info("%s captured as a CUDA graph", what)

    def launch(self, bucket: Hashable) -> None:
        self._check(self.cu.cuGraphLaunch(self._execs[bucket][1], self.stream), "cuGraphLaunch")

    def close(self) -> None:
        for graph, graph_exec in self._execs.values():
            self.cu.cuGraphExecDestroy(graph_exec)
            self.cu.cuGraphDestroy(graph)
        self._execs.clear()
