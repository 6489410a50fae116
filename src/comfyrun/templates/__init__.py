"""Workflow templates: a folder of workflows with typed parameters (see service.py)."""

from comfyrun.templates.folder import TemplateFiles, TemplateFolder
from comfyrun.templates.model import Template, compile_template
from comfyrun.templates.service import TemplateService

__all__ = ["Template", "TemplateFiles", "TemplateFolder", "TemplateService", "compile_template"]
