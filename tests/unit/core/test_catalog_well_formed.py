"""Node definitions a backend serves are kept only in ComfyUI's shape (core.catalog.well_formed):
whatever else a backend's /object_info holds, what is kept can be read by every reader of
definitions — a prompt's checks answer it valid or InvalidWorkflow, never another error (a
definition that was a number was a 500 on every submission)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfyrun.core.catalog import union_object_info, well_formed
from comfyrun.core.fit import missing_in
from comfyrun.errors import InvalidWorkflow
from comfyrun.prompt_checks import validate_like_comfyui, validate_prompt

SHARED = Path(__file__).resolve().parents[4] / "shared" / "comfy-protocol"

json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
anything = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
spec = st.one_of(
    st.tuples(st.sampled_from(["INT", "FLOAT", "STRING", "IMAGE", "BOOLEAN", "COMBO"])).map(list),
    st.tuples(
        st.sampled_from(["INT", "FLOAT", "STRING", "IMAGE"]),
        st.dictionaries(st.sampled_from(["min", "max", "default", "step", "options"]), anything),
    ).map(list),
    st.tuples(st.lists(anything, max_size=3), st.dictionaries(st.text(max_size=3), anything)).map(
        list
    ),
    anything,
)
definition = st.one_of(
    st.fixed_dictionaries(
        {
            "input": st.one_of(
                st.fixed_dictionaries(
                    {"required": st.dictionaries(st.sampled_from(["a", "b", "images"]), spec)},
                    optional={"optional": st.dictionaries(st.sampled_from(["c"]), spec)},
                ),
                anything,
            ),
            "output": st.one_of(st.lists(st.sampled_from(["IMAGE", "INT"]), max_size=2), anything),
            "output_node": st.one_of(st.booleans(), anything),
        }
    ),
    anything,
)
names = st.sampled_from(["A", "B", "SaveImage"])
object_infos = st.dictionaries(names, definition, min_size=1)
link_or_value = st.one_of(
    anything, st.tuples(st.sampled_from(["1", "2", "9"]), st.integers(0, 2)).map(list)
)
prompts = st.dictionaries(
    st.sampled_from(["1", "2", "3"]),
    st.fixed_dictionaries(
        {
            "class_type": names,
            "inputs": st.dictionaries(st.sampled_from(["a", "b", "c", "images"]), link_or_value),
        }
    ),
    min_size=1,
)


def test_comfyui_s_own_definitions_are_all_kept() -> None:
    info = json.loads((SHARED / "object_info_full.json").read_text())
    kept, dropped = well_formed(info)
    assert dropped == [] and kept == info


def test_definitions_out_of_shape_are_left_out() -> None:
    good = {"input": {"required": {"x": ["INT", {"min": 0}]}, "hidden": {"p": "PROMPT"}}}
    info: dict[str, Any] = {
        "Good": good,
        "NoInputs": {"output": ["IMAGE"], "output_node": True},
        "Number": 5,
        "InputsNumber": {"input": 5},
        "SectionList": {"input": {"required": ["x"]}},
        "SpecNumber": {"input": {"optional": {"x": 5}}},
        "SpecEmpty": {"input": {"required": {"x": []}}},
        "OptionsList": {"input": {"required": {"x": ["INT", [1]]}}},
        "TypeNumber": {"input": {"required": {"x": [5]}}},
        "OutputText": {"output": "IMAGE"},
    }
    kept, dropped = well_formed(info)
    assert list(kept) == ["Good", "NoInputs"]
    assert dropped == [n for n in info if n not in kept]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(object_infos, prompts)
def test_what_is_kept_every_check_of_a_prompt_can_read(info: Any, prompt: Any) -> None:
    kept, _ = well_formed(info)
    union_object_info([kept, kept])
    missing_in(prompt, kept, frozenset())
    for check in (validate_prompt, validate_like_comfyui):
        with contextlib.suppress(InvalidWorkflow):  # (any other error fails the test)
            check(prompt, kept)


def test_a_stored_catalog_is_read_back_in_shape() -> None:
    """A catalog an earlier build stored as its backend served it."""
    from comfyrun.core.catalog import NodeCatalog
    from comfyrun.store.catalogs import catalog_from_row, catalog_to_row

    good = {"input": {"required": {}}, "output_node": True}
    row = catalog_to_row(NodeCatalog("b", {"Save": good, "Bad": 5}, 1.0))
    assert catalog_from_row(row).object_info == {"Save": good}
    assert catalog_from_row(row | {"object_info": "[1]"}).object_info == {}
