"""Stage ``export``: a trained detector run -> a model package (OpenVINO FP32/INT8, ONNX)."""
