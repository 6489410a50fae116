"""Settings of one emulated ComfyUI server."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from comfyrun.comfy.emulator.faults import Faults
from comfyrun.comfy.emulator.modelpaths import ExtraPaths
from comfyrun.comfy.emulator.scans import FolderScans

#: Model files listed when neither `models` nor `models_dir` says otherwise. The two
#: `*_for_test`/`*_for_protocol_tests` names are the ones in the captured transcripts;
#: `broken_for_test.safetensors` validates and then fails at run time, as it did there.
DEFAULT_MODELS: dict[str, list[str]] = {
    "checkpoints": [
        "broken_for_test.safetensors",
        "random_sd15_for_protocol_tests.safetensors",
        "sd_xl_base_1.0.safetensors",
        "v1-5-pruned-emaonly.safetensors",
    ],
    "loras": ["example_lora.safetensors"],
    "vae": ["vae-ft-mse-840000-ema-pruned.safetensors"],
    "text_encoders": ["clip_l.safetensors", "t5xxl_fp16.safetensors"],
    "diffusion_models": ["flux1-dev.safetensors"],
    "controlnet": ["control_v11p_sd15_canny.safetensors"],
    "upscale_models": ["RealESRGAN_x4plus.pth"],
    "embeddings": [],
}

PREVIEW_METHODS = ("none", "auto", "latent2rgb", "taesd")


@dataclass
class EmulatorConfig:
    """How to run one emulated ComfyUI.

    `port=0` binds a free port. `models` maps a ComfyUI model folder name (checkpoints, loras,
    vae, ...) to the file names to list; `models_dir` scans a ComfyUI-shaped models folder
    instead (its lists win over `models` for the folders it has). With neither, DEFAULT_MODELS.
    `extra_paths` adds folders as ComfyUI's extra_model_paths.yaml does; a folder's listing is
    kept while its directories are unchanged (`scans`, as ComfyUI keeps its own), so files
    added while the server runs are listed at once.
    `step_time_s` is the time KSampler spends per step. `argv` is what /system_stats reports.
    `load_s_per_gb` and `load_s_per_file` simulate loading a model that is not in memory (the
    last `loaded_models_max` models used stay loaded, as ComfyUI keeps recent models).
    `disable_smart_memory` (ComfyUI's --disable-smart-memory) unloads every model at the end of
    each prompt, taking `unload_s` per model loaded, before the prompt's history is written.
    """

    host: str = "127.0.0.1"
    port: int = 0
    output_dir: Path = Path("output")
    input_dir: Path = Path("input")
    temp_dir: Path = Path("temp")
    step_time_s: float = 0.0
    models: dict[str, list[str]] | None = None
    models_dir: Path | None = None
    preview_method: str = "none"
    faults: Faults = field(default_factory=Faults)
    argv: list[str] = field(default_factory=lambda: ["main.py"])
    max_upload_size: int = 104857600
    extra_paths: ExtraPaths = field(default_factory=ExtraPaths)
    scans: FolderScans = field(default_factory=FolderScans, repr=False, compare=False)
    load_s_per_gb: float = 0.0
    load_s_per_file: float = 0.0
    loaded_models_max: int = 1
    disable_smart_memory: bool = False
    unload_s: float = 0.0

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        self.input_dir = Path(self.input_dir)
        self.temp_dir = Path(self.temp_dir)
        if self.models_dir is not None:
            self.models_dir = Path(self.models_dir)
        if self.preview_method not in PREVIEW_METHODS:
            raise ValueError(f"preview_method must be one of {PREVIEW_METHODS}")

    @property
    def previews_enabled(self) -> bool:
        return self.preview_method != "none"

    def model_lists(self) -> dict[str, list[str]]:
        """Folder name -> sorted file names, from models_dir, then `models`, then defaults;
        the extra paths add theirs."""
        base = self.models if self.models is not None else DEFAULT_MODELS
        own = self._own_folders()
        names = set(base) | {folder.name for folder in own} | self.extra_paths.folders()
        return {name: self._model_list(name, own) or [] for name in names}

    def model_list(self, name: str) -> list[str] | None:
        """`model_lists()[name]` (None where that has no `name`), walking only the directories
        of folder `name`: what validating a prompt asks, as ComfyUI's `get_filename_list` is
        asked only for the folders of the nodes in the prompt."""
        return self._model_list(name, self._own_folders())

    def _own_folders(self) -> list[Path]:
        return self.scans.subfolders(self.models_dir) if self.models_dir is not None else []

    def _model_list(self, name: str, own: list[Path]) -> list[str] | None:
        """Folder `name`'s list, given models_dir's subfolders (`own`)."""
        base = self.models if self.models is not None else DEFAULT_MODELS
        found = list(base[name]) if name in base else None
        if self.models_dir is not None and self.models_dir / name in own:
            found = self.scans.tree(self.models_dir / name)
        if name in self.extra_paths.folders():
            names = set(found or [])
            for folder in self.extra_paths.search_order(name, None):
                names.update(self.scans.tree(folder))
            found = list(names)
        return None if found is None else sorted(found)

    def model_path(self, folder: str, name: str) -> Path | None:
        """The file a model name refers to, searched as ComfyUI's get_full_path does."""
        own = self.models_dir / folder if self.models_dir is not None else None
        for root in self.extra_paths.search_order(folder, own):
            candidate = root / name
            if candidate.is_file():
                return candidate
        return None
