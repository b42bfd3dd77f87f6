"""TorchScript export of ViLD models with the vocabulary as a runtime input."""

from .torchscript import (
    EXPORT_METHODS,
    ExportError,
    ViLDEnsembleInferenceModule,
    ViLDInferenceModule,
    export_model,
    inference_module,
)

__all__ = [
    "EXPORT_METHODS",
    "ExportError",
    "ViLDInferenceModule",
    "ViLDEnsembleInferenceModule",
    "export_model",
    "inference_module",
]
