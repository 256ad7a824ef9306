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
)
QUANTIZATIONS = ("int8", "int8-static")  # `export --quantize`: dynamic int8, static int8 calibrated on texts
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
