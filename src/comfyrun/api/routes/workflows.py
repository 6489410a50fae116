"""/api/v2/workflows: workflow templates with typed parameters, and jobs made from them.

A thin translator over TemplateService; the job itself goes through JobService.submit like any
other. The OpenAPI document is regenerated per request with one operation per template whose
request body carries that template's parameter schema.
"""

from __future__ import annotations

import contextlib
import copy
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from comfyrun.api.context import AppContext, app_ctx, get_ctx, require_auth
from comfyrun.api.routes.jobs import check_webhook, submission, submitted_job
from comfyrun.api.schemas import JobOptionsRequest, JobOut
from comfyrun.errors import ComfyrunError
from comfyrun.templates import Template, TemplateService

Ctx = Annotated[AppContext, Depends(get_ctx)]

router = APIRouter(
    prefix="/api/v2/workflows", tags=["workflows"], dependencies=[Depends(require_auth)]
)


class WorkflowOut(BaseModel):
    """A template: its parameters as a JSON Schema object; `valid` false with the reason when
    it cannot run."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: str
    description: str | None = None
    valid: bool
    error: str | None = None
    errors: list[dict[str, Any]] | None = None
    format: str = "api"
    parameters: dict[str, Any]


class WorkflowDetail(WorkflowOut):
    prompt: dict[str, Any] | None = None


class WorkflowList(BaseModel):
    workflows: list[WorkflowOut]


class RunWorkflowRequest(JobOptionsRequest):
    """POST /api/v2/workflows/{name}/jobs: the template's parameter values and the usual job
    options."""

    params: dict[str, Any] = Field(default_factory=dict)


async def get_templates(request: Request) -> TemplateService:
    service: TemplateService = app_ctx(request).templates
    return service


Templates = Annotated[TemplateService, Depends(get_templates)]


def workflow_out(template: Template, *, detail: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": template.name,
        "version": template.version,
        "valid": template.valid,
        "format": template.source_format,
        "parameters": template.schema(),
    }
    if template.description:
        out["description"] = template.description
    if not template.valid:
        out["error"] = template.reason or "the template cannot run"
        out["errors"] = [p.to_dict() for p in template.problems]
    if not template.checked:
        out["checked"] = False  # no backend described its nodes yet: schema inferred
    if detail:
        out["prompt"] = template.prompt
    return out


@router.get("", response_model=WorkflowList, response_model_exclude_none=True)
async def list_workflows(templates: Templates) -> dict[str, Any]:
    return {"workflows": [workflow_out(t) for t in await templates.list()]}


@router.get("/{name}", response_model=WorkflowDetail, response_model_exclude_none=True)
async def get_workflow(name: str, templates: Templates) -> dict[str, Any]:
    return workflow_out(await templates.get(name), detail=True)


@router.post("/{name}/jobs", status_code=201, response_model=JobOut)
async def run_workflow(
    name: str,
    body: RunWorkflowRequest,
    request: Request,
    response: Response,
    ctx: Ctx,
    templates: Templates,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    wait: Annotated[float | None, Query(ge=0, description="Hold the request up to N s")] = None,
) -> JobOut:
    received = time.perf_counter()
    check_webhook(ctx, body)
    base = submission(
        body,
        {},
        lambda: {"workflow_template": name, **body.model_dump(mode="json")},
        idempotency_key,
        metadata_max_bytes=ctx.settings.metadata_max_bytes,
        wait=wait,
    )
    submitted = await templates.submit(name, body.params, base)
    return await submitted_job(ctx, request, response, body, submitted, wait, received)


# the OpenAPI document with each template's parameters -----------------------------------------


def install_openapi(app: FastAPI) -> None:
    """Serve /openapi.json with one `POST /api/v2/workflows/<name>/jobs` per valid template,
    its request body typed by that template's parameter schema. Templates reload, so the
    document is made again when they changed (the service compiles a template anew when its
    files change): its ~80 KB were copied and encoded at every request, ~4 ms of the event
    loop's CPU each."""
    path = app.openapi_url or "/openapi.json"
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) != path]
    made: list[tuple[tuple[Template, ...], bytes]] = []  # the last document, and its templates

    async def openapi(request: Request) -> Response:
        templates: tuple[Template, ...] = ()
        service: TemplateService | None = getattr(request.app.state.ctx, "templates", None)
        if service is not None:
            with contextlib.suppress(ComfyrunError):  # a document without templates beats none
                templates = tuple(await service.list())
        if made and _same(made[0][0], templates):
            return Response(made[0][1], media_type="application/json")
        doc = copy.deepcopy(app.openapi())
        add_templates(doc, list(templates))
        body = JSONResponse(doc).body
        made[:] = [(templates, bytes(body))]
        return Response(body, media_type="application/json")

    app.add_route(path, openapi, include_in_schema=False)


def _same(made_with: tuple[Template, ...], templates: tuple[Template, ...]) -> bool:
    """The same compiled templates (the very objects: kept by the cache, never reused)."""
    return len(made_with) == len(templates) and all(
        a is b for a, b in zip(made_with, templates, strict=True)
    )


def add_templates(doc: dict[str, Any], templates: list[Template]) -> None:
    generic = doc.get("paths", {}).get("/api/v2/workflows/{name}/jobs", {}).get("post")
    if generic is None:
        return
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for template in templates:
        if not template.valid:
            continue
        ref = f"WorkflowParams_{_component_name(template.name)}"
        schemas[ref] = {"title": f"{template.name} parameters", **template.schema()}
        op = copy.deepcopy(generic)
        op["operationId"] = f"run_workflow_{_component_name(template.name)}"
        op["summary"] = f"Run workflow {template.name}"
        if template.description:
            op["description"] = template.description
        op["parameters"] = [p for p in op.get("parameters", []) if p.get("name") != "name"]
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "allOf": [{"$ref": "#/components/schemas/RunWorkflowRequest"}],
                        "properties": {"params": {"$ref": f"#/components/schemas/{ref}"}},
                    }
                }
            },
        }
        doc["paths"][f"/api/v2/workflows/{template.name}/jobs"] = {"post": op}


def _component_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)


__all__ = ["RunWorkflowRequest", "install_openapi", "router", "workflow_out"]
