"""The trained network as a TensorRT engine (export.py --format tensorrt), and test.py --backend tensorrt.

TensorRT compiles the ONNX graph of reid/onnx_export.py (uint8 RGB pictures in, test.py's L2-normalised feature
of the picture plus its mirror image out) into an engine for one GPU model and one TensorRT version, so the
engine is built on the machine that runs it; there only a Cast may read a uint8 input (cast_first). It needs an
NVIDIA GPU and TensorRT 10 or newer, whose named-tensor API this module uses; without them one line says what
is missing. The engine computes in float32 (TF32 off), so the parity gate holds it to the same cosine as ONNX
Runtime and TorchScript; batches of 1 to MAX_BATCH pictures run as they come, larger ones in slices. Buffers
are torch tensors on the GPU: no other CUDA binding.
"""
import importlib.util
import os
import tempfile

import torch

from reid import onnx_export
from utils import UserError

INPUT, OUTPUT = "pictures", "features"   # the names onnx_export gives the graph's ends
MAX_BATCH, USUAL_BATCH = 256, 64         # the batch range of the engine's profile, and the size it tunes for
ELSEWHERE = "elsewhere use --format onnx or --format torchscript"


def require_tensorrt():
    """The tensorrt module, or one line naming what this machine lacks."""
    missing = [what for what, lacking in (("TensorRT 10 or newer (pip install tensorrt)",
                                           importlib.util.find_spec("tensorrt") is None),
                                          ("an NVIDIA GPU with CUDA", not torch.cuda.is_available())) if lacking]
    if missing:
        raise UserError(f"a TensorRT engine needs {' and '.join(missing)}, which this machine lacks",
                        f"build and run it on an NVIDIA GPU machine with TensorRT installed; {ELSEWHERE}")
    import tensorrt

    if int(tensorrt.__version__.split(".")[0]) < 10:
        raise UserError(f"TensorRT {tensorrt.__version__} is older than 10, whose named-tensor API this uses",
                        "pip install --upgrade tensorrt")
    return tensorrt


def cast_first(graph):
    """Rewrite the ONNX file ``graph`` so that only its Cast to float reads the uint8 input: TensorRT accepts a
    uint8 network input only when every layer that reads it is a Cast, and the exporter also takes the batch
    size from it (a Shape node), which reads the same from the Cast's float output."""
    import onnx

    model = onnx.load(graph)
    nodes = model.graph.node
    cast = next((node for node in nodes if node.op_type == "Cast" and list(node.input) == [INPUT]), None)
    if cast is None:
        raise RuntimeError(f"no Cast reads its input {INPUT}")
    for node in nodes:
        if node is not cast:
            node.input[:] = [cast.output[0] if name == INPUT else name for name in node.input]
    order = [cast] + [node for node in nodes if node is not cast]   # the Cast reads only the input: first is in order
    model.graph.ClearField("node")
    model.graph.node.extend(order)
    onnx.save(model, graph)


def build(trt, graph, size):
    """The serialized engine of the ONNX file ``graph`` for pictures of ``size`` (H, W), float32 throughout."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)   # explicit batch: the only kind TensorRT 10 builds
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(graph):
        raise RuntimeError("; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "parse failed")
    config = builder.create_builder_config()
    config.clear_flag(trt.BuilderFlag.TF32)   # on by default; it rounds to 10-bit mantissas, the gate wants float32
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT, (1, 3, *size), (USUAL_BATCH, 3, *size), (MAX_BATCH, 3, *size))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT built no engine (its log above says why)")
    return bytes(serialized)


def export(net, size, path, opset=18):
    """Write ``net``'s test-time engine to ``path``: the ONNX graph first (a temporary file), then TensorRT's build."""
    trt = require_tensorrt()
    with tempfile.TemporaryDirectory() as folder:
        graph = os.path.join(folder, "model.onnx")
        onnx_export.export(net, size, graph, opset)
        cast_first(graph)
        serialized = build(trt, graph, size)
    with open(path, "wb") as handle:
        handle.write(serialized)


class Engine:
    """A saved engine and one execution context: uint8 pictures (on any device) -> float32 features on the GPU."""

    def __init__(self, trt, path):
        with open(path, "rb") as handle:
            self.engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(handle.read())
        if self.engine is None:
            raise RuntimeError("TensorRT could not read it (an engine runs only on the GPU model and TensorRT "
                               "version that built it)")
        names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        if names != {INPUT, OUTPUT}:
            raise RuntimeError(f"its tensors are {sorted(names)}, not {INPUT} and {OUTPUT}")
        self.input_shape = tuple(self.engine.get_tensor_shape(INPUT))   # (-1, 3, H, W): a free batch
        self.max_batch = self.engine.get_tensor_profile_shape(INPUT, 0)[2][0]
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()   # TensorRT synchronises the whole device around work on the default one

    def __call__(self, pictures):
        rows = []
        with torch.cuda.stream(self.stream):
            for part in pictures.split(self.max_batch):
                part = part.to("cuda", torch.uint8).contiguous()
                self.context.set_input_shape(INPUT, tuple(part.shape))
                features = torch.empty(tuple(self.context.get_tensor_shape(OUTPUT)), dtype=torch.float32,
                                       device="cuda")
                self.context.set_tensor_address(INPUT, part.data_ptr())
                self.context.set_tensor_address(OUTPUT, features.data_ptr())
                if not self.context.execute_async_v3(self.stream.cuda_stream):
                    raise RuntimeError("TensorRT could not run the engine")
                rows.append(features)
        self.stream.synchronize()
        return torch.cat(rows)


def load(path, size, export_again):
    """The engine at ``path``, refused in one line unless it maps uint8 pictures of ``size`` to features here."""
    trt = require_tensorrt()
    try:
        engine = Engine(trt, path)
    except (OSError, RuntimeError) as err:
        raise UserError(f"{path} is not a TensorRT engine this machine can run ({err})",
                        f"export it again on this machine: {export_again}") from None
    if engine.input_shape[1:] != (3, *size) or engine.input_shape[0] != -1:
        raise UserError(f"{path} takes pictures of shape {engine.input_shape}, not [batch, 3, {size[0]}, {size[1]}]",
                        f"export it again: {export_again}")
    return engine


def extract(engine, dataset, batchsize, num_workers=0, desc="features"):
    """test.py --backend tensorrt: the features of every (uint8) picture of ``dataset``, float32 on the CPU."""
    return onnx_export.features_by_batch(engine, dataset, batchsize, num_workers, desc)


def produce(path):
    """The parity gate's view of a saved engine: uint8 pictures -> NumPy features."""
    engine = Engine(require_tensorrt(), path)
    return lambda pictures: engine(pictures).cpu().numpy()
