"""The templates folder: API and UI-format templates compiled, broken ones explained, versions
that follow the files, and reloads that read only what changed."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from tests.support.workflow import OBJECT_INFO, txt2img

from comfyrun.templates import TemplateFolder, compile_template


def bump(path: Path) -> None:
    """A new mtime even on a filesystem with coarse timestamps."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))


def titled_ui() -> dict[str, Any]:
    ui = txt2img()
    for node in ui["nodes"]:
        if node["id"] == 6:
            node["title"] = "$prompt"
        if node["id"] == 3:
            node["title"] = "$seed"
    return ui


def object_info() -> dict[str, Any]:
    """The converter tests' object_info, SaveImage marked as the output node it is."""
    info = copy.deepcopy(OBJECT_INFO)
    info["SaveImage"]["output_node"] = True
    return info


def test_ui_format_template_is_converted_and_its_titles_become_parameters(tmp_path: Path) -> None:
    (tmp_path / "ui.json").write_text(json.dumps(titled_ui()))
    files = TemplateFolder(tmp_path).scan()["ui"]
    template = compile_template(files, object_info())
    assert template.valid and template.source_format == "ui"
    assert template.prompt is not None and template.prompt["3"]["class_type"] == "KSampler"
    props = template.schema()["properties"]
    assert props["prompt"]["default"] == "a cat" and props["seed"]["type"] == "integer"


def test_ui_format_template_without_object_info_is_not_valid(tmp_path: Path) -> None:
    (tmp_path / "ui.json").write_text(json.dumps(titled_ui()))
    template = compile_template(TemplateFolder(tmp_path).scan()["ui"], None)
    assert not template.valid and "needs a ready backend" in (template.reason or "")


def test_broken_templates_say_why(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("[1, 2]")
    (tmp_path / "badparams.json").write_text(json.dumps({"1": {"class_type": "SaveImage"}}))
    (tmp_path / "badparams.params.json").write_text("{")
    (tmp_path / "unknown.json").write_text(json.dumps({"1": {"class_type": "Nope", "inputs": {}}}))
    found = TemplateFolder(tmp_path).scan()
    reasons = {n: compile_template(f, object_info()).reason for n, f in found.items()}
    assert "neither an API prompt nor a UI workflow" in (reasons["bad"] or "")
    assert "badparams.params.json is not valid JSON" in (reasons["badparams"] or "")
    assert "node types no backend has: Nope" in (reasons["unknown"] or "")


def test_comfyui_checks_the_template_and_bad_defaults_make_parameters_required(
    tmp_path: Path,
) -> None:
    ui = titled_ui()
    (tmp_path / "ok.json").write_text(json.dumps(ui))
    for node in ui["nodes"]:
        if node["id"] == 4:
            node["widgets_values"] = ["missing.safetensors"]
    (tmp_path / "nomodel.json").write_text(json.dumps(ui))
    (tmp_path / "param.json").write_text(json.dumps(ui))
    (tmp_path / "param.params.json").write_text(
        json.dumps({"ckpt": {"node": "4", "input": "ckpt_name"}})
    )
    found = TemplateFolder(tmp_path).scan()
    nomodel = compile_template(found["nomodel"], object_info())
    assert not nomodel.valid and "ckpt_name" in (nomodel.reason or "")
    param = compile_template(found["param"], object_info())
    assert param.valid and param.schema()["required"] == ["ckpt"]
    assert "default" not in param.schema()["properties"]["ckpt"]


def test_versions_follow_the_files_and_reload_reads_only_changes(tmp_path: Path) -> None:
    wf = tmp_path / "a.json"
    wf.write_text(json.dumps({"1": {"class_type": "SaveImage", "inputs": {}}}))
    folder = TemplateFolder(tmp_path)
    first = folder.scan()["a"]
    assert folder.scan()["a"] is first  # unchanged: not read again
    params = tmp_path / "a.params.json"
    params.write_text(json.dumps({"p": {"node": "1", "input": "filename_prefix"}}))
    second = folder.scan()["a"]
    assert second.version != first.version and second.params is not None
    wf.write_text(json.dumps({"1": {"class_type": "SaveImage", "inputs": {"x": 1}}}))
    bump(wf)
    assert folder.scan()["a"].version not in (first.version, second.version)
    wf.unlink()
    assert folder.scan() == {}
    assert TemplateFolder(tmp_path / "missing").scan() == {}
