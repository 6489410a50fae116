from __future__ import annotations

from tests.support.workflow import OBJECT_INFO

from comfyrun.core.workflow.widgets import UNSET, default_value, widget_layout


def _names(class_type: str) -> list[tuple[str, bool]]:
    return [(s.name, s.serialize) for s in widget_layout(class_type, OBJECT_INFO[class_type])]


def test_seed_with_flag_gets_a_control_slot_that_is_not_sent() -> None:
    assert _names("KSampler") == [
        ("seed", True),
        ("control_after_generate", False),
        ("steps", True),
        ("cfg", True),
        ("sampler_name", True),
        ("scheduler", True),
        ("denoise", True),
    ]


def test_seed_named_inputs_without_the_key_get_a_control_slot() -> None:
    assert _names("RandomNoise") == [("noise_seed", True), ("control_after_generate", False)]


def test_an_explicit_false_flag_means_no_control_slot() -> None:
    assert _names("NoControl") == [("seed", True)]


def test_upload_and_remote_combo_slots() -> None:
    assert _names("LoadImage") == [("image", True), ("upload", False)]
    assert _names("LoadImageOutput") == [
        ("image", True),
        ("$$auto_refresh", False),
        ("refresh", True),
        ("upload", False),
    ]


def test_frontend_extension_widgets_are_appended() -> None:
    assert _names("LoadAudio") == [("audio", True), ("upload", False), ("audioUI", True)]


def test_sockets_and_forced_inputs_are_not_widgets() -> None:
    assert [name for name, _ in _names("Options")] == ["flag", "count", "mode", "label", "points"]


def test_defaults_follow_the_frontend() -> None:
    assert default_value(["INT", {"default": 7}]) == 7
    assert default_value(["INT", {}]) == 0
    assert default_value(["FLOAT", {"min": 0.5}]) == 0
    assert default_value(["BOOLEAN", {}]) is False
    assert default_value(["STRING", {}]) == ""
    assert default_value([["a", "b"], {}]) == "a"
    assert default_value(["COMBO", {"options": ["x", "y"]}]) == "x"
    assert default_value(["COMBO", {}]) is UNSET
    assert default_value(["WEBCAM", {}]) is UNSET
