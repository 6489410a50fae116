"""comfyrun: a durable job server for ComfyUI workflows."""

__version__ = "0.1.0"
__all__ = ["__version__"]
