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
#: Option keys that add an `upload` button. The frontend declares it as one more required input,
#: so its slot comes after all required widgets (LoadImageMask: image, channel, upload).
#: `file_upload` (Load3D) gets its button from an extension that takes no slot.
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
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
    #: text rewritten by the frontend's dynamic prompts when queued (see prompts.py)
    dynamic_prompts: bool = False


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


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def input_specs(
    node_def: Mapping[str, Any], sections: tuple[str, ...] = ("required", "optional")
) -> list[tuple[str, Sequence[Any]]]:
    """The (name, spec) pairs of a class's required then optional inputs, in definition order."""
    inputs = _mapping(node_def.get("input"))
    order = _mapping(node_def.get("input_order"))
    result: list[tuple[str, Sequence[Any]]] = []
    for section in sections:
        specs = _mapping(inputs.get(section))
        listed = order.get(section)
        names = listed if isinstance(listed, list) else list(specs)
        for name in names:
            spec = specs.get(name) if isinstance(name, str) else None
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


class _Unset:
    """A widget with no value: the frontend's `undefined`, which JSON leaves out."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
_TYPE_DEFAULTS: Mapping[str, Any] = {"INT": 0, "FLOAT": 0, "BOOLEAN": False, "STRING": ""}


def default_value(spec: Sequence[Any]) -> Any:
    """The value a fresh widget has: the spec's default, else the first option, 0, "" or False.

    A combo without options, or a frontend widget type without a natural empty value, has none
    (UNSET); such an input is left out of the prompt, as the frontend's JSON leaves it out.
    """
    options = spec_options(spec)
    if "default" in options:
        return options["default"]
    kind = spec_type(spec)
    if kind == "COMBO":
        choices = combo_options(spec)
        return choices[0] if choices else UNSET
    return _TYPE_DEFAULTS.get(kind, UNSET)


def has_control_widget(name: str, spec: Sequence[Any]) -> bool:
    """Whether a control_after_generate widget follows this input (see the seed rule above)."""
    options = spec_options(spec)
    kind = spec_type(spec)
    if "control_after_generate" in options:
        return bool(options["control_after_generate"]) and kind in ("INT", "FLOAT", "COMBO")
    return kind == "INT" and name in SEED_NAMES


def _slots(name: str, spec: Sequence[Any]) -> list[WidgetSlot]:
    """The widget of one input and the frontend-only widgets that follow it."""
    kind = spec_type(spec)
    options = spec_options(spec)
    dynamic = kind == "STRING" and bool(options.get("dynamicPrompts"))
    slots = [WidgetSlot(name, default_value(spec), input_type=kind, dynamic_prompts=dynamic)]
    if has_control_widget(name, spec):
        slots.append(WidgetSlot("control_after_generate", "fixed", serialize=False))
        if kind == "COMBO":
            slots.append(WidgetSlot("control_filter_list", "", serialize=False))
    if kind == "COMBO" and isinstance(options.get("remote"), dict):
        slots.append(WidgetSlot("$$auto_refresh", False, serialize=False))
        if options["remote"].get("refresh_button"):
            slots.append(WidgetSlot("refresh", "refresh", fixed=True))
    return slots


def widget_layout(class_type: str, node_def: Mapping[str, Any]) -> list[WidgetSlot]:
    """Every widget slot of a node of this class, in the order `widgets_values` stores them."""
    layout: list[WidgetSlot] = []
    upload = False
    for section in ("required", "optional"):
        for name, spec in input_specs(node_def, (section,)):
            if is_widget_spec(spec):
                layout.extend(_slots(name, spec))
                upload = upload or any(spec_options(spec).get(key) for key in UPLOAD_OPTIONS)
        if section == "required" and upload:
            layout.append(WidgetSlot("upload", "image", serialize=False))
    layout.extend(EXTRA_WIDGETS.get(class_type, ()))
    return layout


def migrate_values(node_def: Mapping[str, Any], values: list[Any]) -> list[Any]:
    """Drop the slots that very old saves kept for `forceInput` inputs (`migrateWidgetsValues`).

    Applies only when the saved list has exactly one entry per widget or forced input (two for a
    flagged control) and the class has a forced input; otherwise the list is already current.
    """
    forced: list[bool] = []
    for _name, spec in input_specs(node_def):
        options = spec_options(spec)
        if not options.get("forceInput") and spec_type(spec) not in WIDGET_TYPES:
            continue
        forced.append(bool(options.get("forceInput")))
        if options.get("control_after_generate"):
            forced.append(False)
    if len(forced) != len(values) or not any(forced):
        return values
    return [value for value, drop in zip(values, forced, strict=True) if not drop]
