"""Workflow templates as a service: list and read them, and turn a template plus parameter
values into a job through JobService.submit (which validates, converts and enqueues as for any
other submission). Every job made from a template records its name and version in `metadata`.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

from comfyrun.core.job import JSON
from comfyrun.core.params import Applied, Problem, apply_values, check_values
from comfyrun.errors import InvalidParams, InvalidTemplate, NotFound
from comfyrun.service import JobService, ObjectInfoSource, Submission, Submitted
from comfyrun.templates.folder import TemplateFolder
from comfyrun.templates.model import Template, compile_template

#: metadata keys a template job carries
META_TEMPLATE = "template"
META_VERSION = "template_version"
META_PARAMS = "template_params"


class TemplateService:
    """Templates from one folder, compiled against the backends' object_info (when known)."""

    def __init__(
        self,
        folder: TemplateFolder,
        jobs: JobService,
        *,
        object_info: ObjectInfoSource | None = None,
    ) -> None:
        self._folder = folder
        self._jobs = jobs
        self._object_info = object_info
        self._compiled: dict[str, tuple[str, object, Template]] = {}
        self._scan_lock = asyncio.Lock()

    def using(self, jobs: JobService) -> TemplateService:
        """This service submitting through another JobService (e.g. an API key's, so that
        the jobs are the key's, under its scope and quota); the templates are shared."""
        other = copy.copy(self)
        other._jobs = jobs
        return other

    async def list(self) -> list[Template]:
        """Every template in the folder now (re-read when its files changed)."""
        async with self._scan_lock:
            files = await asyncio.to_thread(self._folder.scan)
        object_info = await self._object_info() if self._object_info is not None else None
        templates = []
        for name, found in files.items():
            cached = self._compiled.get(name)
            if cached is not None and cached[0] == found.version and cached[1] is object_info:
                templates.append(cached[2])
                continue
            template = compile_template(found, object_info)
            self._compiled[name] = (found.version, object_info, template)
            templates.append(template)
        for gone in set(self._compiled) - set(files):
            del self._compiled[gone]
        return templates

    async def get(self, name: str) -> Template:
        for template in await self.list():
            if template.name == name:
                return template
        raise NotFound(f"workflow template {name!r} not found", details={"workflow": name})

    def runnable(self, template: Template) -> JSON:
        """The template's prompt; raises InvalidTemplate (with the reasons) when it cannot run."""
        if not template.valid or template.prompt is None:
            raise InvalidTemplate(
                f"workflow template {template.name!r} cannot run: {template.reason}",
                details={"workflow": template.name, "errors": _dicts(template.problems)},
            )
        return template.prompt

    def render(self, template: Template, values: Any, *, base: str = "/params") -> Applied:
        """The template's prompt with `values`; raises InvalidTemplate or InvalidParams (every
        problem, each with its JSON pointer)."""
        prompt = self.runnable(template)
        problems = check_values(template.params, values, base=base)
        if problems:
            raise invalid_params(problems)
        return apply_values(prompt, template.params, values)

    def submission(
        self,
        template: Template,
        applied: Applied,
        base: Submission,
        extra: Mapping[str, Any] | None = None,
    ) -> Submission:
        """`base` (the caller's job options) for the rendered template; `extra` metadata."""
        metadata = {
            **base.metadata,
            META_TEMPLATE: template.name,
            META_VERSION: template.version,
            META_PARAMS: applied.values,
            **(extra or {}),
        }
        return dataclasses.replace(
            base,
            workflow=applied.prompt,
            inputs=(*base.inputs, *applied.inputs),
            metadata=metadata,
        )

    async def submit(self, name: str, values: Any, base: Submission) -> Submitted:
        template = await self.get(name)
        applied = self.render(template, values)
        # its own copy: the nodes no parameter touched are shared with the cached template
        applied = dataclasses.replace(applied, prompt=copy.deepcopy(applied.prompt))
        return await self._jobs.submit(self.submission(template, applied, base))


def invalid_params(problems: list[Problem]) -> InvalidParams:
    shown = "; ".join(f"{p.pointer}: {p.message}" for p in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return InvalidParams(f"invalid parameters: {shown}{more}", details={"errors": _dicts(problems)})


def _dicts(problems: Any) -> list[dict[str, Any]]:
    return [p.to_dict() for p in problems]


def template_metadata(metadata: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(template name, version) a job was made from, if any."""
    name, version = metadata.get(META_TEMPLATE), metadata.get(META_VERSION)
    return (
        name if isinstance(name, str) else None,
        version if isinstance(version, str) else None,
    )


__all__ = [
    "META_PARAMS",
    "META_TEMPLATE",
    "META_VERSION",
    "TemplateService",
    "invalid_params",
    "template_metadata",
]
