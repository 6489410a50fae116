"""What a ComfyUI workflow must pass before it is queued (comfyrun.service calls it).

Three checks, each against what the fleet's backends say of themselves: a workflow no backend
can run (its node types, model files, `requirements`) is refused with NoBackendFits (422); a
UI export is converted to the API format with a backend's /object_info; and the API prompt is
validated the way ComfyUI validates it, so a bad one is refused at once with ComfyUI's own
errors. A refusal that may rest on definitions stored before the backends changed is asked
again (the backends are woken) before it stands.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from comfyrun.core.catalog import definitions_may_be_stale
from comfyrun.core.fit import BackendOffer, RequirementError, check_requirements, first_fit
from comfyrun.core.job import JSON
from comfyrun.core.workflow import convert_ui_to_api, is_ui_workflow
from comfyrun.errors import ConversionError, InvalidRequest, InvalidWorkflow
from comfyrun.models.names import accept_model_names
from comfyrun.models.specs import ModelRef
from comfyrun.prompt_checks import check_prompt, no_backend_fits, prompt_error

#: Returns ComfyUI's /object_info from a ready backend (cached), or None when none answers.
ObjectInfoSource = Callable[[], Awaitable[JSON | None]]
#: `offers(recheck)` → what each backend offers (labels, object_info when known): core.fit.
#: With `recheck`, the backends are asked again first (a refusal must not rest on stale ones).
CatalogSource = Callable[[bool], Awaitable[Sequence[BackendOffer]]]


class WorkflowGate:
    """The checks above, over the fleet's definitions (`object_info`: any ready backend's;
    `recheck_object_info`: the same, asked again; `catalogs`: every backend's offer). Without
    them a workflow gets the structural checks only."""

    def __init__(
        self,
        *,
        object_info: ObjectInfoSource | None = None,
        recheck_object_info: ObjectInfoSource | None = None,
        catalogs: CatalogSource | None = None,
    ) -> None:
        self._object_info = object_info
        # a refusal for an unknown node type or model may come from definitions stored before
        # the backends changed: asked again (the backends are woken) before refusing for good
        self._recheck_object_info = recheck_object_info
        self._catalogs = catalogs

    async def fitting_backends(
        self,
        workflow: Any,
        requirements: Any,
        *,
        placeholders: bool,
        models: tuple[ModelRef, ...] = (),
    ) -> JSON | None:
        """Refuse (NoBackendFits, 422) a job no configured backend can run: its node types,
        model files (combo values) and `requirements` against each backend's object_info and
        labels. Returns the object_info of the first backend that can run it (to validate the
        workflow against), or None when none is known. Model files the job brings (`models`) are
        not looked for: comfyrun delivers them to the backend."""
        try:  # checked whatever the dialect, even with no backend known yet
            wanted = check_requirements(requirements)
        except RequirementError as exc:
            raise InvalidRequest(str(exc), details={"requirements": requirements}) from exc
        if self._catalogs is None or not isinstance(workflow, dict):
            return None
        if is_ui_format(workflow):
            return None  # judged at dispatch, once converted
        brought = frozenset(m.name for m in models)
        catalogs = list(await self._catalogs(False))
        if not catalogs:
            return None
        fits, offer, unfit = first_fit(
            workflow, wanted, catalogs, values=not placeholders, brought=brought
        )
        if not fits:  # the stored definitions may predate a backend's new nodes or models
            catalogs = list(await self._catalogs(True))
            fits, offer, unfit = first_fit(
                workflow, wanted, catalogs, values=not placeholders, brought=brought
            )
        if fits:
            return dict(offer.object_info) if offer is not None and offer.object_info else None
        known_infos = [c.object_info for c in catalogs if c.object_info]
        everywhere = {(u.missing_nodes, u.missing_values, u.unmet) for u in unfit}
        if known_infos and len(everywhere) == 1 and not unfit[0].unmet:
            # missing on every backend alike: ComfyUI's own verdict, as one ComfyUI would answer
            await self.prepare(
                workflow,
                placeholders=placeholders,
                models=models,
                object_info=dict(known_infos[0]),
            )
        raise no_backend_fits(unfit)

    async def prepare(
        self,
        workflow: Any,
        *,
        placeholders: bool = False,
        models: tuple[ModelRef, ...] = (),
        object_info: JSON | None = None,
        targets: Sequence[str] | None = None,
    ) -> JSON:
        """The API prompt to store, checked the way ComfyUI checks it (`targets`: the output
        nodes to run, ComfyUI's `partial_execution_targets`, the only ones judged).

        With a backend's object_info at hand the whole of ComfyUI's validation runs here, so a
        bad workflow is refused at once with ComfyUI's own errors (a partly valid one passes, as
        ComfyUI accepts it). Values that inputs or asset references will replace at dispatch
        (`placeholders`) are not final yet: those workflows get the structural checks only, and
        the backend validates them when they are placed.
        """
        if workflow == {}:  # (as ComfyUI judges it: a prompt of no node has no output)
            raise InvalidWorkflow(
                "the workflow has no nodes (an API-format prompt of at least one output node)",
                details=prompt_error("prompt_no_outputs", "Prompt has no outputs"),
            )
        if not isinstance(workflow, dict):
            raise InvalidWorkflow(
                "the workflow must be a non-empty JSON object (an API-format prompt)",
                details=prompt_error("invalid_prompt", "workflow is not a JSON object"),
            )
        if is_ui_format(workflow):
            workflow = await self._convert_ui(workflow)
        fitting = object_info is not None  # a backend that can run it: its own definitions
        if object_info is None and self._object_info is not None:
            object_info = await self._object_info()
        if object_info and models:  # the names a job brings are not in any list yet
            object_info = accept_model_names(object_info, workflow, models)
        try:
            await check_prompt(workflow, object_info, placeholders=placeholders, targets=targets)
        except InvalidWorkflow as exc:
            if (
                fitting
                or self._recheck_object_info is None
                or not definitions_may_be_stale(exc.details)
            ):
                raise
            fresher = await self._recheck_object_info()
            if not fresher or fresher == object_info:
                raise
            if models:
                fresher = accept_model_names(fresher, workflow, models)
            await check_prompt(workflow, fresher, placeholders=placeholders, targets=targets)
        prompt: JSON = workflow
        return prompt

    async def _convert_ui(self, workflow: JSON) -> JSON:
        object_info = await self._object_info() if self._object_info is not None else None
        if not object_info:
            raise ConversionError(
                "cannot convert a UI-format workflow: no backend is ready to describe its nodes "
                "(/object_info); retry when one is, or submit the API format"
            )
        converted = convert_ui_to_api(workflow, object_info)
        if not isinstance(converted, dict):
            raise ConversionError("the converter returned no prompt")
        return converted


def is_ui_format(workflow: Mapping[str, Any]) -> bool:
    """A UI export (nodes + links lists) rather than an API prompt."""
    return is_ui_workflow(workflow)


__all__ = ["CatalogSource", "ObjectInfoSource", "WorkflowGate", "is_ui_format"]
