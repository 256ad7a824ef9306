"""The names of the inference backends and precisions, in a module that imports nothing, so that the settings and
the command line's parser know them without loading PyTorch."""

BACKENDS = (
    "torch-fp32",
    "torch-bf16",
    "torch-bf16-compiled",
    "torch-int8",
    "onnx-fp32",
    "onnx-int8",
    "onnx-int8-static",
    "openvino-fp32",  # OpenVINO (where installed) over the exported ONNX graph
    "openvino-bf16",  # its bf16 precision hint, on CPUs with native bf16 only
    "openvino-int8",  # NNCF's static int8, calibrated on texts
)
# `export --quantize`: dynamic int8, static int8 calibrated on texts, OpenVINO int8 from NNCF calibrated on texts, and
# auto: the backend `--backend auto` measures fastest among those a bundle can hold, under its guard
QUANTIZATIONS = ("int8", "int8-static", "openvino-int8", "auto")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
