"""The HTTP routes: ComfyUI's table, mirrored under /api/ (except /internal/*), plus
/emulator/faults. Handlers translate; state lives on the Emulator."""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from comfyrun.comfy.emulator.files import upload_image, upload_mask, view
from comfyrun.comfy.emulator.metadata import view_metadata

if TYPE_CHECKING:
    from comfyrun.comfy.emulator.server import Emulator


async def _json_or_empty(request: web.Request) -> Any:
    try:
        return await request.json()
    except json.JSONDecodeError:
        return {}


def add_routes(app: web.Application, emu: Emulator) -> None:
    routes = web.RouteTableDef()

    @routes.get("/ws")
    async def ws(request: web.Request) -> web.StreamResponse:
        return await emu.hub.handle(request)

    @routes.post("/prompt")
    async def post_prompt(request: web.Request) -> web.StreamResponse:
        return await emu.post_prompt(request)

    @routes.get("/prompt")
    async def get_prompt(request: web.Request) -> web.StreamResponse:
        return web.json_response(emu.hub.status_payload())

    @routes.get("/queue")
    async def get_queue(request: web.Request) -> web.StreamResponse:
        running, pending = emu.queue.current()
        return web.json_response({"queue_running": running, "queue_pending": pending})

    @routes.post("/queue")
    async def post_queue(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("clear"):
            emu.queue.wipe()
        if "delete" in body:
            for prompt_id in body["delete"]:
                emu.queue.delete(prompt_id)
        return web.Response(status=200)

    @routes.get("/history")
    async def get_history(request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        try:
            max_items = int(query["max_items"]) if "max_items" in query else None
            offset = int(query.get("offset", -1))
        except ValueError:
            return web.json_response({"error": "max_items and offset must be integers"}, status=400)
        return web.json_response(emu.queue.get_history(max_items=max_items, offset=offset))

    @routes.get("/history/{prompt_id}")
    async def get_history_item(request: web.Request) -> web.StreamResponse:
        return web.json_response(emu.queue.get_history(prompt_id=request.match_info["prompt_id"]))

    @routes.post("/history")
    async def post_history(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("clear"):
            emu.queue.wipe_history()
        if "delete" in body:
            for prompt_id in body["delete"]:
                emu.queue.delete_history(prompt_id)
        return web.Response(status=200)

    @routes.post("/interrupt")
    async def post_interrupt(request: web.Request) -> web.StreamResponse:
        body = await _json_or_empty(request)
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        emu.interrupt(str(prompt_id) if prompt_id else None)
        return web.Response(status=200)

    @routes.post("/free")
    async def post_free(request: web.Request) -> web.StreamResponse:
        """As ComfyUI: flags the worker applies after the prompt it runs next (models
        unloaded; with `free_memory`, the execution cache dropped too)."""
        body = await _json_or_empty(request)
        if isinstance(body, dict):
            for name in ("unload_models", "free_memory"):
                if body.get(name):
                    emu.queue.set_flag(name, True)
        return web.Response(status=200)

    @routes.get("/view")
    async def get_view(request: web.Request) -> web.StreamResponse:
        return view(request, emu.dirs)

    @routes.post("/upload/image")
    async def post_upload_image(request: web.Request) -> web.StreamResponse:
        return await upload_image(request, emu.dirs)

    @routes.post("/upload/mask")
    async def post_upload_mask(request: web.Request) -> web.StreamResponse:
        return await upload_mask(request, emu.dirs)

    @routes.get("/object_info")
    async def get_object_info(request: web.Request) -> web.StreamResponse:
        return web.json_response(emu.object_info())

    @routes.get("/object_info/{node_class}")
    async def get_object_info_node(request: web.Request) -> web.StreamResponse:
        name = request.match_info["node_class"]
        defs = emu.object_info()
        return web.json_response({name: defs[name]} if name in defs else {})

    @routes.get("/system_stats")
    async def system_stats(request: web.Request) -> web.StreamResponse:
        return web.json_response(emu.system_stats())

    @routes.get("/features")
    async def features(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"supports_preview_metadata": True, "max_upload_size": emu.config.max_upload_size}
        )

    @routes.get("/embeddings")
    async def embeddings(request: web.Request) -> web.StreamResponse:
        names = emu.config.model_lists().get("embeddings", [])
        return web.json_response([n.rsplit(".", 1)[0] for n in names])

    @routes.get("/extensions")
    async def extensions(request: web.Request) -> web.StreamResponse:
        from comfyrun.comfy.emulator.server import EXTENSIONS

        return web.json_response(EXTENSIONS)

    @routes.get("/models")
    async def models(request: web.Request) -> web.StreamResponse:
        from comfyrun.comfy.emulator.server import MODEL_FOLDERS

        return web.json_response(MODEL_FOLDERS)

    @routes.get("/models/{folder}")
    async def models_folder(request: web.Request) -> web.StreamResponse:
        from comfyrun.comfy.emulator.server import MODEL_FOLDERS

        folder = request.match_info["folder"]
        lists = emu.config.model_lists()
        if folder not in MODEL_FOLDERS and folder not in lists:
            return web.Response(status=404)
        return web.json_response(lists.get(folder, []))

    @routes.get("/view_metadata/{folder_name}")
    async def get_view_metadata(request: web.Request) -> web.StreamResponse:
        from comfyrun.comfy.emulator.server import MODEL_FOLDERS

        return await view_metadata(request, emu.config, MODEL_FOLDERS)

    @routes.get("/settings")
    async def settings(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"Comfy.InstalledVersion": "1.27.10", "Comfy.TutorialCompleted": True}
        )

    @routes.get("/users")
    async def users(request: web.Request) -> web.StreamResponse:
        return web.json_response({"storage": "server", "migrated": True})

    @routes.get("/userdata")
    async def userdata(request: web.Request) -> web.StreamResponse:
        return web.Response(status=404)

    @routes.get("/workflow_templates")
    async def workflow_templates(request: web.Request) -> web.StreamResponse:
        return web.json_response({})

    @routes.get("/experiment/models")
    async def experiment_models(request: web.Request) -> web.StreamResponse:
        paths = emu.folder_paths()
        return web.json_response([{"name": k, "folders": v} for k, v in paths.items()])

    @routes.get("/emulator/faults")
    async def get_faults(request: web.Request) -> web.StreamResponse:
        return web.json_response(emu.faults.to_json())

    @routes.post("/emulator/faults")
    async def post_faults(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            trial = copy.deepcopy(emu.faults)
            trial.apply_json(body)  # all or nothing: a bad spec changes no setting
            emu.faults.apply_json(body)
        except (ValueError, TypeError) as ex:
            return web.json_response(
                {"error": {"type": "invalid_fault", "message": str(ex)}}, status=400
            )
        if body.get("drop_websockets"):
            await emu.drop_websockets()
        return web.json_response(emu.faults.to_json())

    api = web.RouteTableDef()
    for route in routes:
        if isinstance(route, web.RouteDef):
            api.route(route.method, "/api" + route.path)(route.handler)

    internal = web.RouteTableDef()

    @internal.get("/internal/logs")
    async def logs(request: web.Request) -> web.StreamResponse:
        return web.json_response("")

    @internal.get("/internal/folder_paths")
    async def folder_paths(request: web.Request) -> web.StreamResponse:
        return web.json_response(emu.folder_paths())

    app.add_routes(routes)
    app.add_routes(api)
    app.add_routes(internal)
