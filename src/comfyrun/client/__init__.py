"""comfyrun's Python client (httpx only)."""

from comfyrun.client.client import TERMINAL, ComfyrunClient
from comfyrun.client.errors import ComfyrunAPIError
from comfyrun.client.sse import ServerEvent, SSEDecoder

__all__ = ["TERMINAL", "ComfyrunAPIError", "ComfyrunClient", "SSEDecoder", "ServerEvent"]
