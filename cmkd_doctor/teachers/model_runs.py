"""A user's model file is data that is checked before it runs, and a run of it can always
be stopped: within a second of SIGINT or SIGTERM, and by a time limit per batch.

onnxruntime runs a session in C++ and returns to Python only when it ends, so a signal's
handler (which Python runs in the main thread, between bytecodes) would wait for it: for
ever, for an ONNX ``Loop`` whose condition never turns false. Here every ONNX run happens
on a worker thread while the main thread waits in slices of 0.1 s; the handler runs
there, and onnxruntime's own terminate flag (``RunOptions.terminate``) ends the worker's
run at its next operator. A torch module runs in the main thread, where a signal acts
between operators; its time limit is an alarm (``SIGALRM``) where the platform has one.

The limit is ``$CMKD_DOCTOR_MODEL_TIMEOUT`` seconds per batch (default 600): long
enough for any network on a CPU, short enough that a model that never ends is told.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cmkd_doctor.errors import InputError
from cmkd_doctor.io.files import regular_file

TIME_LIMIT_ENV = "CMKD_DOCTOR_MODEL_TIMEOUT"
DEFAULT_TIME_LIMIT = 600.0
MAX_TIME_LIMIT = 86400.0
WAIT_SLICE = 0.1  # seconds the main thread waits at a time: how soon a signal acts
QUIET = 4  # onnxruntime's log level: fatal only (its errors come back as exceptions)


class ModelTimeout(InputError):
    """One batch of a model's run took longer than the time limit."""

    def __init__(self, what: str, rows: int, limit: float):
        super().__init__(
            f"{what}: one batch of {rows:,} rows ran past the model time limit of "
            f"{limit:g} s (${TIME_LIMIT_ENV}) and was stopped; a model that never ends (an "
            f"ONNX Loop whose condition stays true) cannot be a teacher, and a slow one "
            f"needs a higher ${TIME_LIMIT_ENV}")


class ModelFailed(InputError):
    """onnxruntime raised while running a model: ``cause`` is its first line."""

    def __init__(self, what: str, cause: str):
        super().__init__(f"{what}: onnxruntime could not run it ({cause})")
        self.cause = cause


def time_limit() -> float:
    """Seconds one batch of a model may run: ``$CMKD_DOCTOR_MODEL_TIMEOUT``, else 600."""
    given = os.environ.get(TIME_LIMIT_ENV, "").strip()
    if not given:
        return DEFAULT_TIME_LIMIT
    try:
        limit = float(given)
    except ValueError:
        limit = float("nan")
    if not 0 < limit <= MAX_TIME_LIMIT:  # nan fails too
        raise InputError(f"${TIME_LIMIT_ENV} must be a number of seconds in (0, "
                         f"{MAX_TIME_LIMIT:g}]; got {given!r}")
    return limit


def read_onnx(path: str | Path, what: str) -> Any:
    """The ONNX model at ``path``, checked before anything runs it: the file and its
    declared weights against free memory, and onnx's checker (one writer per tensor,
    initializers that hold what they declare, known operators); ``what`` names it in
    errors (``--model FILE``)."""
    try:
        import onnx
    except ImportError:
        raise InputError(f"{what}: ONNX needs the onnx extra: pip install "
                         f"'cmkd-doctor[onnx]'") from None
    path = regular_file(path, what)
    from cmkd_doctor.devices import require_memory

    # protobuf holds the whole file, and the parse a copy of its tensors
    require_memory(2 * path.stat().st_size, f"{what} (read whole)", _cpu())
    try:
        model = onnx.load(path)
    except Exception as exc:  # noqa: BLE001 - onnx raises its own untyped decode errors
        raise InputError(f"{what}: cannot be read as ONNX ({_first_line(exc)})") from None
    _check_structure(model, path, what)
    _check_weights_fit(model, what)
    return model


def _check_structure(model: Any, path: Path, what: str) -> None:
    """onnx's checker on ``model``. It requires a shape on every graph input and output,
    which exporters may leave out (onnxruntime runs such a model, and a teacher's (n, d)
    input is then probed), so those shapes are marked present for the check alone. A
    model over protobuf's 2 GiB (its weights in external files) is checked from its
    file, as onnx requires."""
    import onnx

    large = model.ByteSize() > onnx.checker.MAXIMUM_PROTOBUF
    unshaped = [] if large else [
        info.type.tensor_type for info in (*model.graph.input, *model.graph.output)
        if info.type.HasField("tensor_type") and not info.type.tensor_type.HasField("shape")]
    for tensor_type in unshaped:
        tensor_type.shape.SetInParent()
    try:
        onnx.checker.check_model(str(path) if large else model)
    except Exception as exc:  # noqa: BLE001 - ValidationError, and protobuf's own
        raise InputError(f"{what}: not a valid ONNX model ({_first_line(exc)})") from None
    finally:
        for tensor_type in unshaped:
            tensor_type.ClearField("shape")


def _check_weights_fit(model: Any, what: str) -> None:
    """The weights the model declares (every initializer, in its graphs and those of its
    If, Loop and Scan nodes) fit in free memory: onnxruntime allocates them whole. (That
    each holds what its dimensions declare is onnx's checker's part.)"""
    from onnx import TensorProto, helper

    from cmkd_doctor.devices import require_memory

    total, graphs = 0, [model.graph]
    while graphs:
        graph = graphs.pop()
        graphs.extend(a.g for node in graph.node for a in node.attribute if a.HasField("g"))
        graphs.extend(g for node in graph.node for a in node.attribute for g in a.graphs)
        for tensor in graph.initializer:
            if tensor.data_type == TensorProto.STRING:
                total += sum(len(s) for s in tensor.string_data)
                continue
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
            total += int(np.prod(tensor.dims, dtype=object)) * itemsize
    require_memory(total, f"{what} (its weights, as declared)", _cpu())


def _cpu() -> Any:
    import torch

    return torch.device("cpu")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


class OnnxSession:
    """An onnxruntime session on the CUDA provider when onnxruntime offers it (else the
    CPU), whose runs a signal or the time limit can stop; ``what`` names the model in
    errors. onnxruntime's log lines are silenced: its errors come back as one
    ``error:`` line naming the model."""

    def __init__(self, model: Any, what: str):
        try:
            import onnxruntime as ort
        except ImportError:
            raise InputError(f"{what}: ONNX models need onnxruntime: pip install "
                             "'cmkd-doctor[onnx]' (or [gpu] for onnxruntime-gpu)") from None
        self.what, self._ort = what, ort
        ort.set_default_logger_severity(QUIET)  # its log lines are not for the user
        options = ort.SessionOptions()
        options.log_severity_level = QUIET
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        source = model if isinstance(model, (str, bytes)) else model.SerializeToString()
        try:
            self.session = ort.InferenceSession(source, options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise InputError(f"{what}: cannot be loaded as an ONNX model "
                             f"({_first_line(exc)})") from None

    def get_inputs(self) -> Any:
        return self.session.get_inputs()

    def get_providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The session's outputs on ``feeds``. A signal in the main thread, or the time
        limit, sets onnxruntime's terminate flag and the run ends within an operator;
        an error onnxruntime raises (a node that fails, memory it cannot get) is an
        :class:`InputError` naming the model."""
        limit = time_limit()
        options = self._ort.RunOptions()
        options.log_severity_level = QUIET
        done: dict[str, Any] = {}
        finished = threading.Event()  # not join(): an exception inside join() leaves the
        # thread's state wrong (is_alive() says False while it runs, CPython 3.11)

        def work() -> None:
            try:
                done["out"] = self.session.run(None, feeds, options)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                done["error"] = exc
            finally:
                finished.set()

        deadline = time.monotonic() + limit
        threading.Thread(target=work, name="onnx-run", daemon=True).start()
        try:
            while not finished.wait(WAIT_SLICE):  # a signal's handler runs between waits
                if time.monotonic() > deadline:
                    rows = len(next(iter(feeds.values()), ()))
                    raise ModelTimeout(self.what, rows, limit)
        finally:
            if not finished.is_set():  # stopped by a signal or the limit
                options.terminate = True  # onnxruntime ends the run at its next operator
                finished.wait(1.0)
        if "error" in done:
            raise ModelFailed(self.what, _first_line(done["error"])) from None
        return done["out"]


def bounded(run: Callable[..., Any], what: str) -> Callable[..., Any]:
    """``run`` (a torch module, called in the main thread) under the time limit: an
    alarm raises :class:`ModelTimeout` in it, between two operators. Elsewhere (another
    thread, a platform without ``SIGALRM``) ``run`` as it is: a signal still stops it."""
    if not hasattr(signal, "setitimer"):
        return run

    def call(x: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return run(x)
        limit = time_limit()

        def expire(signum: int, frame: object) -> None:
            raise ModelTimeout(what, len(x), limit)

        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            return run(x)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    return call
