"""The emulator's model folders as ComfyUI 0.3.64 sees them: extra_model_paths.yaml sections
(base_path, is_default, multi-line values, legacy names), files added while running, and the
simulated model load time."""

from __future__ import annotations

from pathlib import Path

from comfyrun.comfy.emulator.config import EmulatorConfig
from comfyrun.comfy.emulator.executor import Executor
from comfyrun.comfy.emulator.faults import Faults
from comfyrun.comfy.emulator.modelpaths import ExtraPaths


def write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_yaml_sections_follow_comfyuis_rules(tmp_path: Path) -> None:
    yaml_file = tmp_path / "conf" / "extra.yaml"
    yaml_file.parent.mkdir()
    yaml_file.write_text(
        "cache:\n"
        "  base_path: ../cache\n"
        "  is_default: true\n"
        "  checkpoints: ckpt\n"
        "  loras: |\n"
        "    l1\n"
        "    l2\n"
        "plain:\n"
        "  clip: rel-clip\n"
        "empty:\n"
    )
    extra = ExtraPaths()
    extra.load(yaml_file)
    own = tmp_path / "models" / "checkpoints"
    assert extra.search_order("checkpoints", own) == [tmp_path / "cache" / "ckpt", own]
    # each default path is inserted first, so ComfyUI searches a default section bottom-up
    assert extra.search_order("loras", None) == [tmp_path / "cache" / x for x in ("l2", "l1")]
    # no base_path: relative to the yaml's folder; `clip` is text_encoders
    assert extra.search_order("text_encoders", None) == [tmp_path / "conf" / "rel-clip"]


def test_lists_merge_every_folder_and_see_new_files_at_once(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write(models / "checkpoints" / "own.safetensors")
    shared = tmp_path / "shared"
    yaml_file = tmp_path / "extra.yaml"
    yaml_file.write_text(f"s:\n  base_path: {shared}\n  checkpoints: checkpoints\n")
    extra = ExtraPaths()
    extra.load(yaml_file)
    cfg = EmulatorConfig(models_dir=models, extra_paths=extra)
    assert cfg.model_lists()["checkpoints"] == ["own.safetensors"]
    added = write(shared / "checkpoints" / "sub" / "new.safetensors")
    assert cfg.model_lists()["checkpoints"] == ["own.safetensors", "sub/new.safetensors"]
    assert cfg.model_path("checkpoints", "sub/new.safetensors") == added
    assert cfg.model_path("checkpoints", "missing.safetensors") is None


def test_one_folders_list_is_the_one_of_all_lists(tmp_path: Path) -> None:
    """`model_list` (what a prompt's validation reads) is `model_lists()`'s entry, for a folder
    of models_dir only, of the extra paths only (legacy name included), of both, of the
    configured lists only, and one nobody has."""
    models = tmp_path / "models"
    write(models / "checkpoints" / "own.safetensors")
    write(models / "upscale_models" / "x4.pth")
    (models / "empty").mkdir()
    shared = tmp_path / "shared"
    write(shared / "ckpt" / "a" / "shared.safetensors")
    write(shared / "clip" / "clip_g.safetensors")
    yaml_file = tmp_path / "extra.yaml"
    yaml_file.write_text(f"s:\n  base_path: {shared}\n  checkpoints: ckpt\n  clip: clip\n")
    extra = ExtraPaths()
    extra.load(yaml_file)
    cfg = EmulatorConfig(models_dir=models, extra_paths=extra, models={"vae": ["v.pt"]})
    lists = cfg.model_lists()
    assert lists["checkpoints"] == ["a/shared.safetensors", "own.safetensors"]
    for name in [*lists, "nobody_has_this"]:
        assert cfg.model_list(name) == lists.get(name), name
    assert cfg.model_list("text_encoders") == ["clip_g.safetensors"]


def test_model_load_time_is_spent_only_for_models_not_in_memory(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write(models / "checkpoints" / "a.safetensors", b"\0" * 1_000_000)
    write(models / "checkpoints" / "b.safetensors", b"\0" * 2_000_000)
    cfg = EmulatorConfig(models_dir=models, load_s_per_file=1.0, load_s_per_gb=1000.0)
    executor = Executor(cfg, hub=None, faults=Faults(), defs={})  # type: ignore[arg-type]
    assert executor.load_time("checkpoints", "a.safetensors") == 2.0  # 1 s + 1 MB at 1000 s/GB
    assert executor.load_time("checkpoints", "a.safetensors") == 0.0  # still loaded
    assert executor.load_time("loras", "l.safetensors") == 1.0  # another folder: a stays
    assert executor.load_time("checkpoints", "a.safetensors") == 0.0
    assert executor.load_time("checkpoints", "b.safetensors") == 3.0  # evicts a (1 kept)
    assert executor.load_time("checkpoints", "a.safetensors") == 2.0
