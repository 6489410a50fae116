"""The routes ComfyUI's web editor calls, over HTTP (ASGI, no browser): the frontend build at /,
the workflow templates, users/settings/userdata per owner in the data dir (answered as ComfyUI's
user_manager answers them), the small catalog and internal routes, and with API keys on, the
key page whose cookie lets the editor in as the key's owner and only from its own origin."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from tests.support.api import asgi_app, memory_settings

from comfyrun import errors
from comfyrun.api.context import EDITOR_COOKIE
from comfyrun.api.editor.frontend import web_root
from comfyrun.api.editor.userfiles import UserFiles, owner_folder
from comfyrun.cli.server import running_server

ADMIN = "editor-admin"


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_app(memory_settings(tmp_path)) as (_, client, _ctx):
        yield client


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A server with API keys on (the client has no key of its own)."""
    async with asgi_app(memory_settings(tmp_path, api_keys=[ADMIN])) as (_, client, _ctx):
        yield client


async def mint(
    http: httpx.AsyncClient, name: str, scopes: tuple[str, ...] = ("read", "submit")
) -> str:
    answer = await http.post(
        "/api/v2/admin/keys",
        json={"name": name, "scopes": list(scopes)},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert answer.status_code == 201, answer.text
    key: str = answer.json()["key"]
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# the frontend and its files ------------------------------------------------------------------


async def test_the_editor_is_served_at_the_root(http: httpx.AsyncClient, tmp_path: Path) -> None:
    root = web_root(memory_settings(tmp_path))
    assert root is not None, "comfyui-frontend-package is a pinned dependency"
    page = await http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    assert page.text == (root / "index.html").read_text(encoding="utf-8")
    # the scripts index.html names are served, revalidated on every load as ComfyUI does
    script = page.text.split('src="./', 1)[1].split('"', 1)[0]
    answer = await http.get(f"/{script}")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-cache"
    assert answer.content == (root / script).read_bytes()
    assert (await http.get("/materialdesignicons.min.css")).status_code == 200
    # the dashboard stays where it was; paths the build does not hold keep their own answers
    assert (await http.get("/dashboard")).status_code == 200
    assert (await http.get("/user.css")).status_code == 404
    assert (await http.get("/assets/no-such-file.js")).status_code == 404
    assert (await http.post("/no-such-route", json={})).status_code == 404


async def test_templates_and_extensions_come_from_the_packages(http: httpx.AsyncClient) -> None:
    index = await http.get("/templates/index.json")
    assert index.status_code == 200
    categories = index.json()
    names = [t["name"] for c in categories for t in c["templates"]]
    assert "default" in names
    template = await http.get("/templates/default.json")
    assert template.status_code == 200 and "nodes" in template.json()
    for prefix in ("", "/api"):
        extensions = (await http.get(f"{prefix}/extensions")).json()
        assert "/extensions/core/groupNode.js" in extensions
        assert all(e.startswith("/extensions/") and e.endswith(".js") for e in extensions)
        script = await http.get(extensions[0])
        assert script.status_code == 200
        assert (await http.get(f"{prefix}/i18n")).json() == {}
        assert (await http.get(f"{prefix}/workflow_templates")).json() == {}


async def test_a_frontend_root_setting_serves_another_build(tmp_path: Path) -> None:
    build = tmp_path / "build"
    (build / "assets").mkdir(parents=True)
    (build / "index.html").write_text("<html>my build</html>")
    (build / "assets" / "app.js").write_text("console.log(1)")
    (build / "extensions" / "mine").mkdir(parents=True)
    (build / "extensions" / "mine" / "x.js").write_text("")
    settings = memory_settings(tmp_path, frontend_root=build)
    async with asgi_app(settings) as (_, http, _ctx):
        assert (await http.get("/")).text == "<html>my build</html>"
        assert (await http.get("/assets/app.js")).text == "console.log(1)"
        assert (await http.get("/api/extensions")).json() == ["/extensions/mine/x.js"]


# users, settings, userdata ---------------------------------------------------------------------


async def test_users_and_settings_as_comfyui_answers_them(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    assert (await http.get("/api/users")).json() == {"storage": "server", "migrated": False}
    assert (await http.get("/api/settings")).json() == {}
    assert (await http.get("/api/settings/Comfy.X")).json() is None
    assert (await http.post("/api/settings/Comfy.X", json=True)).status_code == 200
    assert (await http.post("/api/settings", json={"A.b": [1, 2], "C": "d"})).status_code == 200
    assert (await http.get("/settings")).json() == {"Comfy.X": True, "A.b": [1, 2], "C": "d"}
    assert (await http.get("/api/settings/A.b")).json() == [1, 2]
    assert (await http.get("/api/users")).json() == {"storage": "server", "migrated": True}
    stored = json.loads((tmp_path / "user" / "default" / "comfy.settings.json").read_text())
    assert stored["C"] == "d"
    # bad bodies: a clear 400, never a 500
    assert (await http.post("/api/settings", content=b"{nope")).status_code == 400
    assert (await http.post("/api/settings", json=[1])).status_code == 400
    assert (await http.post("/api/settings/X", content=b"{nope")).status_code == 400
    refused = await http.post("/api/users", json={"username": "x"})
    assert refused.status_code == 400 and "error" in refused.json()


async def test_concurrent_setting_writes_are_all_kept(http: httpx.AsyncClient) -> None:
    answers = await asyncio.gather(*(http.post(f"/api/settings/S.{i}", json=i) for i in range(20)))
    assert all(a.status_code == 200 for a in answers)
    assert (await http.get("/api/settings")).json() == {f"S.{i}": i for i in range(20)}


async def test_userdata_files_round_trip(http: httpx.AsyncClient) -> None:
    # a new user: listings 404 (the editor expects that), v2 lists nothing
    assert (await http.get("/api/userdata", params={"dir": "workflows"})).status_code == 404
    assert (await http.get("/api/userdata/user.css")).status_code == 404
    assert (await http.get("/api/v2/userdata")).json() == []
    assert (await http.get("/api/userdata")).status_code == 400  # no dir

    workflow = {"nodes": [], "links": [], "version": 0.4}
    saved = await http.post(
        "/api/userdata/workflows%2Fmy%20flow.json",
        params={"overwrite": "false", "full_info": "true"},
        content=json.dumps(workflow).encode(),
    )
    assert saved.status_code == 200, saved.text
    info = saved.json()
    assert info["path"] == "workflows/my flow.json"
    assert info["size"] == len(json.dumps(workflow))
    assert {"modified", "created"} <= set(info)
    again = await http.post(
        "/api/userdata/workflows%2Fmy%20flow.json", params={"overwrite": "false"}, content=b"{}"
    )
    assert again.status_code == 409

    got = await http.get("/api/userdata/workflows%2Fmy%20flow.json")
    assert got.status_code == 200 and got.json() == workflow

    listing = await http.get(
        "/api/userdata",
        params={"dir": "workflows", "recurse": "true", "full_info": "true", "split": "false"},
    )
    assert [f["path"] for f in listing.json()] == ["my flow.json"]
    split = await http.get("/api/userdata", params={"dir": "workflows", "split": "true"})
    assert split.json() == [["my flow.json", "my flow.json"]]

    moved = await http.post("/api/userdata/workflows%2Fmy%20flow.json/move/workflows%2Fb%2Fc.json")
    assert moved.status_code == 200 and moved.json() == "workflows/b/c.json"
    assert (await http.get("/api/userdata/workflows%2Fmy%20flow.json")).status_code == 404
    tree = (await http.get("/api/v2/userdata", params={"path": "workflows"})).json()
    assert [(e["type"], e["path"]) for e in tree] == [
        ("directory", "workflows/b"),
        ("file", "workflows/b/c.json"),
    ]
    assert (await http.get("/api/v2/userdata", params={"path": "nope"})).status_code == 404
    assert (
        await http.get("/api/v2/userdata", params={"path": "workflows/b/c.json"})
    ).status_code == 400

    assert (await http.delete("/api/userdata/workflows%2Fb%2Fc.json")).status_code == 204
    assert (await http.delete("/api/userdata/workflows%2Fb%2Fc.json")).status_code == 404


@pytest.mark.parametrize(
    "name", ["..%2F..%2Fsecret.json", "%2E%2E%2Fx.json", "a%2F..%2F..%2Fx", "%252E%252E%252Fx.json"]
)
async def test_userdata_paths_cannot_leave_the_users_folder(
    http: httpx.AsyncClient, tmp_path: Path, name: str
) -> None:
    assert (await http.post(f"/api/userdata/{name}", content=b"x")).status_code == 403
    assert (await http.get(f"/api/userdata/{name}")).status_code == 403
    listing = await http.get("/api/userdata", params={"dir": "../.."})
    assert listing.status_code == 403
    assert not escaped(tmp_path)


async def test_a_name_too_long_for_the_file_system_is_the_clients_error(
    http: httpx.AsyncClient,
) -> None:
    """A name past the file system's limit (255 bytes a part): 400 to write it, 400 or 404
    to read or list it, never a 500 (the OSError was unhandled)."""
    long = "w" * 300
    assert (await http.post(f"/api/userdata/{long}.json", content=b"{}")).status_code == 400
    assert (await http.get(f"/api/userdata/{long}.json")).status_code in (400, 404)
    assert (await http.delete(f"/api/userdata/{long}.json")).status_code in (400, 404)
    moved = await http.post(f"/api/userdata/a.json/move/{long}.json")
    assert moved.status_code in (400, 404)
    assert (await http.get("/api/userdata", params={"dir": long})).status_code in (400, 404)
    assert (await http.get("/api/v2/userdata", params={"path": long})).status_code in (400, 404)
    assert (await http.post("/api/userdata/ok.json", content=b"{}")).status_code == 200


def escaped(tmp_path: Path) -> list[Path]:
    """Files written outside the users' folder."""
    return [*tmp_path.glob("*.json"), *tmp_path.glob("x*"), *tmp_path.glob("user/x*")]


# the catalog and internal routes ---------------------------------------------------------------


async def test_internal_and_experiment_routes(http: httpx.AsyncClient) -> None:
    assert (await http.get("/internal/logs")).json() == ""
    raw = (await http.get("/internal/logs/raw")).json()
    assert raw["entries"] == [] and set(raw["size"]) == {"cols", "rows"}
    assert (
        await http.patch("/internal/logs/subscribe", json={"clientId": "x", "enabled": True})
    ).status_code == 200
    assert isinstance((await http.get("/internal/folder_paths")).json(), dict)
    assert (await http.get("/internal/files/output")).json() == []
    assert (await http.get("/internal/files/nope")).status_code == 400
    assert (await http.get("/api/internal/logs")).status_code == 404  # not mirrored, as ComfyUI
    assert (await http.get("/api/experiment/models")).json() == []  # no backend described yet
    assert (await http.get("/api/experiment/models/checkpoints")).status_code == 404
    assert (await http.post("/api/free", json={"unload_models": True})).status_code == 200


async def test_system_stats_name_the_frontend_and_templates_it_serves(
    http: httpx.AsyncClient,
) -> None:
    system = (await http.get("/api/system_stats")).json()["system"]
    assert system["required_frontend_version"] == "1.27.10"
    assert system["installed_templates_version"] == "0.1.95"
    assert system["required_templates_version"] == "0.1.95"
    assert system["ram_total"] >= system["ram_free"] > 0


# API keys: the key page and its cookie ---------------------------------------------------------


async def test_the_key_page_sets_a_cookie_for_the_editor(keyed: httpx.AsyncClient) -> None:
    key = await mint(keyed, "alice")
    # no key: the editor sends the browser to the key page; its routes refuse
    home = await keyed.get("/")
    assert home.status_code == 303 and home.headers["location"] == "/editor/key"
    assert (await keyed.get("/api/queue")).status_code == 401
    assert (await keyed.get("/api/settings")).status_code == 401
    page = await keyed.get("/editor/key")
    assert page.status_code == 200 and 'name="key"' in page.text
    # the editor's own files are public: they hold no data
    assert (await keyed.get("/templates/index.json")).status_code == 200

    wrong = await keyed.post("/editor/key", data={"key": "crk_wrong"})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    assert EDITOR_COOKIE not in keyed.cookies

    ok = await keyed.post("/editor/key", data={"key": f" {key} "})
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    cookie = ok.headers["set-cookie"]
    assert f"{EDITOR_COOKIE}={key}" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    # the client keeps the cookie: the editor and ComfyUI's routes let it in
    assert (await keyed.get("/")).status_code == 200
    assert (await keyed.get("/api/queue")).status_code == 200
    assert (await keyed.post("/api/settings/A", json=1)).status_code == 200
    # a page of another origin cannot use it (cross-site request forgery)
    foreign = {"Origin": "http://evil.example"}
    assert (await keyed.get("/api/queue", headers=foreign)).status_code == 401
    assert (await keyed.post("/api/settings/A", json=2, headers=foreign)).status_code == 401
    same = {"Origin": "http://testserver"}
    assert (await keyed.get("/api/settings/A", headers=same)).json() == 1
    # the native API keeps to bearer tokens
    assert (await keyed.get("/api/v2/jobs")).status_code == 401

    out = await keyed.get("/editor/logout")
    assert out.status_code == 303 and out.headers["location"] == "/editor/key"
    assert (await keyed.get("/api/queue")).status_code == 401


async def test_a_key_without_read_cannot_open_the_editor(keyed: httpx.AsyncClient) -> None:
    key = await mint(keyed, "writer", scopes=("submit",))
    answer = await keyed.post("/editor/key", data={"key": key})
    assert answer.status_code == 403
    assert EDITOR_COOKIE not in keyed.cookies


async def test_each_key_has_its_own_settings_and_workflows(
    keyed: httpx.AsyncClient, tmp_path: Path
) -> None:
    alice, bob = await mint(keyed, "alice"), await mint(keyed, "bob")

    async def put(key: str, name: str, body: Any) -> None:
        answer = await keyed.post(
            f"/api/userdata/workflows%2F{name}", json=body, headers=bearer(key)
        )
        assert answer.status_code == 200, answer.text

    await put(alice, "a.json", {"who": "alice"})
    await put(bob, "b.json", {"who": "bob"})
    await keyed.post("/api/settings/Who", json="alice", headers=bearer(alice))

    def listing(key: str) -> Any:
        return keyed.get("/api/userdata", params={"dir": "workflows"}, headers=bearer(key))

    assert (await listing(alice)).json() == ["a.json"]
    assert (await listing(bob)).json() == ["b.json"]
    assert (
        await keyed.get("/api/userdata/workflows%2Fa.json", headers=bearer(bob))
    ).status_code == 404
    assert (await keyed.get("/api/settings", headers=bearer(bob))).json() == {}
    assert (await keyed.get("/api/settings/Who", headers=bearer(alice))).json() == "alice"
    # an admin key is ComfyUI's default user: it has files of its own
    assert (await keyed.get("/api/v2/userdata", headers=bearer(ADMIN))).json() == []
    folders = sorted(p.name for p in (tmp_path / "user").iterdir())
    assert len(folders) == 2 and all(f.startswith("key_") for f in folders)


async def test_the_cookie_opens_the_socket_only_from_this_servers_pages(tmp_path: Path) -> None:
    settings = memory_settings(tmp_path, port=0, api_keys=[ADMIN])
    async with running_server(settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            key = await mint(http, "alice")
        host = url.removeprefix("http://")
        cookie = {"Cookie": f"{EDITOR_COOKIE}={key}"}
        async with websockets.connect(
            f"ws://{host}/ws?clientId=tab", additional_headers={**cookie, "Origin": url}
        ) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert first["type"] == "status" and first["data"]["sid"] == "tab"
        for headers in ({**cookie, "Origin": "http://evil.example"}, {"Origin": url}):
            with pytest.raises(websockets.exceptions.WebSocketException):
                async with websockets.connect(
                    f"ws://{host}/ws?clientId=tab", additional_headers=headers
                ) as ws:
                    await asyncio.wait_for(ws.recv(), 10)


def test_a_symlink_out_of_the_users_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text("{}")
    files = UserFiles(tmp_path / "user" / "default")
    files.write("workflows/a.json", b"{}", overwrite=True)
    (files.root / "workflows" / "link").symlink_to(outside)
    with pytest.raises(errors.Forbidden):
        files.existing("workflows/link/secret.json")
    with pytest.raises(errors.Forbidden):
        files.write("workflows/link/new.json", b"x", overwrite=True)
    for recurse in (False, True):
        listed = files.listing("workflows", recurse=recurse, full_info=False, split=False)
        assert listed == ["a.json"]
    assert [e["name"] for e in files.listing_v2("workflows") if e["type"] == "file"] == ["a.json"]
    with pytest.raises(errors.Forbidden):
        owner_folder(tmp_path / "user", "../escape")
