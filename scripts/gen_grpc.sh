#!/usr/bin/env bash
# Regenerates src/shipyard/server/grpc/inference_pb2*.py from inference.proto.
# The messages go into a private descriptor pool, not protobuf's default one, so that a
# process can hold both shipyard's server and a client library that defines the same
# `inference.*` names (tritonclient does) without a "duplicate symbol" error.
set -euo pipefail
cd "$(dirname "$0")/.."
out=src/shipyard/server/grpc
.venv/bin/python -m grpc_tools.protoc -I src --python_out=src --pyi_out=src --grpc_python_out=src \
  shipyard/server/grpc/inference.proto
sed -i 's/_descriptor_pool.Default().AddSerializedFile(/_POOL.AddSerializedFile(/' "$out/inference_pb2.py"
sed -i 's/^_sym_db = _symbol_database.Default()$/_sym_db = _symbol_database.Default()\n_POOL = _descriptor_pool.DescriptorPool()/' "$out/inference_pb2.py"
sed -i '1i # ruff: noqa\n# mypy: ignore-errors' "$out/inference_pb2.py" "$out/inference_pb2_grpc.py"
echo "generated $out/inference_pb2.py and inference_pb2_grpc.py"
