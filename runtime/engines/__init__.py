"""Inference engines behind one small interface (:class:`Engine`), looked up by name."""

from runtime.engines.base import (ENGINES, Engine, EngineError, create_engine, engine_kind,
                                  missing_package, predict_proba, register_engine)
from runtime.engines.openvino_engine import import_openvino

__all__ = ["ENGINES", "Engine", "EngineError", "create_engine", "engine_kind", "import_openvino",
           "missing_package", "predict_proba", "register_engine"]
