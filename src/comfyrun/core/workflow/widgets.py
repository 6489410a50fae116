"""The widget layout of a node class, as the ComfyUI frontend (1.27) builds it from object_info.

A UI node stores its widget values positionally (`widgets_values`), and the frontend adds widgets
that are not backend inputs: `control_after_generate` after seeds, `upload` buttons, and a few
per-class extras. So the i-th value belongs to the i-th slot of the layout computed here, not to the
i-th backend input. Slots with `serialize=False` hold a value in the UI but are never sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Input types the frontend draws as a widget (besides a list of options).
WIDGET_TYPES = frozenset(
    {
        "INT",
        "FLOAT",
        "STRING",
        "BOOLEAN",
        "COMBO",
        "WEBCAM",
        "AUDIO_RECORD",
        "LOAD_3D",
        "LOAD_3D_ANIMATION",
    }
)
#: Option keys that add an `upload` button right after their widget.
UPLOAD_OPTIONS = (
    "image_upload",
    "video_upload",
    "audio_upload",
    "file_upload",
    "animated_image_upload",
)
#: INT inputs that get a control widget even without `control_after_generate` in their spec.
SEED_NAMES = frozenset({"seed", "noise_seed"})


@dataclass(frozen=True)
class WidgetSlot:
    """One entry of a node's widget list. `fixed` overrides any stored value (frontend-only widgets)."""

    name: str
    default: Any
    serialize: bool = True
    input_type: str = ""
    fixed: bool = False


#: Frontend extensions that append widgets to some classes. They take a `widgets_values` slot and
#: are serialized with a constant value (the backend ignores them).
_AUDIO_UI = (WidgetSlot("audioUI", "", fixed=True),)
_IMAGE_3D = (WidgetSlot("image", "", fixed=True),)
EXTRA_WIDGETS: Mapping[str, tuple[WidgetSlot, ...]] = {
    "LoadAudio": _AUDIO_UI,
    "SaveAudio": _AUDIO_UI,
    "SaveAudioMP3": _AUDIO_UI,
    "SaveAudioOpus": _AUDIO_UI,
    "PreviewAudio": _AUDIO_UI,
    # RecordAudio keeps the slot but, unlike the other audio nodes, does not send it.
    "RecordAudio": (WidgetSlot("audioUI", "", serialize=False),),
    "PreviewAny": (WidgetSlot("preview", "", fixed=True),),
    "SaveGLB": _IMAGE_3D,
    "Preview3D": _IMAGE_3D,
    "Preview3DAnimation": _IMAGE_3D,
}


def input_specs(node_def: Mapping[str, Any]) -> list[tuple[str, Sequence[Any]]]:
    """The (name, spec) pairs of a class's required then optional inputs, in definition order."""
    inputs = node_def.get("input") or {}
    order = node_def.get("input_order") or {}
    result: list[tuple[str, Sequence[Any]]] = []
    for section in ("required", "optional"):
        specs = inputs.get(section) or {}
        names = order.get(section) or list(specs)
        for name in names:
            spec = specs.get(name)
            if isinstance(spec, list | tuple) and spec:
                result.append((name, spec))
    return result


def spec_type(spec: Sequence[Any]) -> str:
    """The input's type name; "COMBO" for a list of options."""
    head = spec[0]
    if isinstance(head, list | tuple):
        return "COMBO"
    return str(head)


def spec_options(spec: Sequence[Any]) -> dict[str, Any]:
    options = spec[1] if len(spec) > 1 else None
    return options if isinstance(options, dict) else {}


def is_widget_spec(spec: Sequence[Any]) -> bool:
    """True when the frontend shows this input as a widget rather than only a socket."""
    return spec_type(spec) in WIDGET_TYPES and not spec_options(spec).get("forceInput", False)


def combo_options(spec: Sequence[Any]) -> list[Any]:
    head = spec[0]
    if isinstance(head, list | tuple):
        return list(head)
    options = spec_options(spec).get("options")
    return list(options) if isinstance(options, list | tuple) else []


def default_value(spec: Sequence[Any]) -> Any:
    """The value a fresh widget has: the spec's default, else the first option, 0, "" or False."""
    options = spec_options(spec)
    if "default" in options:
        return options["default"]
    kind = spec_type(spec)
    if kind == "COMBO":
        choices = combo_options(spec)
        return choices[0] if choices else ""
    if kind in ("INT", "FLOAT"):
        return options.get("min", 0) if isinstance(options.get("min"), int | float) else 0
    if kind == "BOOLEAN":
        return False
    return ""


def has_control_widget(name: str, spec: Sequence[Any]) -> bool:
    """Whether a control_after_generate widget follows this input (see the seed rule above)."""
    options = spec_options(spec)
    kind = spec_type(spec)
    if "control_after_generate" in options:
        return bool(options["control_after_generate"]) and kind in ("INT", "FLOAT", "COMBO")
    return kind == "INT" and name in SEED_NAMES


def widget_layout(class_type: str, node_def: Mapping[str, Any]) -> list[WidgetSlot]:
    """Every widget slot of a node of this class, in the order `widgets_values` stores them."""
    layout: list[WidgetSlot] = []
    for name, spec in input_specs(node_def):
        if not is_widget_spec(spec):
            continue
        kind = spec_type(spec)
        options = spec_options(spec)
        layout.append(WidgetSlot(name, default_value(spec), input_type=kind))
        if has_control_widget(name, spec):
            layout.append(WidgetSlot("control_after_generate", "fixed", serialize=False))
            if kind == "COMBO":
                layout.append(WidgetSlot("control_filter_list", "", serialize=False))
        if kind == "COMBO" and isinstance(options.get("remote"), dict):
            layout.append(WidgetSlot("$$auto_refresh", False, serialize=False))
            if options["remote"].get("refresh_button"):
                layout.append(WidgetSlot("refresh", "refresh", fixed=True))
        if any(options.get(key) for key in UPLOAD_OPTIONS):
            layout.append(WidgetSlot("upload", "image", serialize=False))
    layout.extend(EXTRA_WIDGETS.get(class_type, ()))
    return layout
