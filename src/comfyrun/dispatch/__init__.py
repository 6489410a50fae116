"""The engine: claims jobs and runs them on the backend pool."""

from comfyrun.dispatch.dispatcher import Dispatcher, default_worker_id
from comfyrun.dispatch.inputs import make_input_placer
from comfyrun.dispatch.settings import DispatchSettings

__all__ = ["DispatchSettings", "Dispatcher", "default_worker_id", "make_input_placer"]
