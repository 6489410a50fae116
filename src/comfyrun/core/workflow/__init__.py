"""UI-format workflows: detection and conversion to API prompts (pure, no I/O)."""

from __future__ import annotations

from comfyrun.core.workflow.convert import convert_ui_to_api
from comfyrun.core.workflow.detect import is_api_prompt, is_ui_workflow

__all__ = ["convert_ui_to_api", "is_api_prompt", "is_ui_workflow"]
