"""comfyrun's Python client (httpx only)."""

from comfyrun.client.client import TERMINAL, ComfyrunAPIError, ComfyrunClient
from comfyrun.client.sse import ServerEvent, SSEDecoder

__all__ = ["TERMINAL", "ComfyrunAPIError", "ComfyrunClient", "SSEDecoder", "ServerEvent"]
