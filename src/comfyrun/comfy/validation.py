"""ComfyUI's POST /prompt validation, reproducing its `validate_prompt` verdicts and error shapes
(checked against the 400 bodies a real ComfyUI returned). The emulator answers POST /prompt with
it, and comfyrun's job service checks submissions with it against a backend's object_info, so
a bad workflow is refused at once with exactly the errors ComfyUI would give.

Pure: the node definitions (object_info) and a custom-validation callback come in, the
verdict goes out. The prompt's widget values are converted in place (INT/FLOAT/STRING/BOOLEAN)
as ComfyUI does, so the queued and historic prompt hold the converted values.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: object_info: class name -> node definition.
NodeDefs = dict[str, dict[str, Any]]
#: (class_type, input_name, value) -> True, or a failure reason (ComfyUI's VALIDATE_INPUTS).
CustomValidator = Callable[[str, str, Any], "bool | str"]
#: class_type -> input names whose value the custom validator checks instead of the combo list.
CUSTOM_VALIDATED: dict[str, tuple[str, ...]] = {
    "LoadImage": ("image",),
    "LoadImageMask": ("image",),
}

Error = dict[str, Any]


@dataclass
class Verdict:
    ok: bool
    error: Error | None
    outputs: list[str]
    node_errors: dict[str, Any] = field(default_factory=dict)


def _error(
    kind: str, message: str, details: str = "", extra: dict[str, Any] | None = None
) -> Error:
    return {"type": kind, "message": message, "details": details, "extra_info": extra or {}}


def full_type_name(typ: type) -> str:
    module = typ.__module__
    if module == "builtins":
        return typ.__qualname__
    return f"{module}.{typ.__qualname__}"


def _types_compatible(received: Any, expected: Any) -> bool:
    if received == "*" or expected == "*":
        return True
    if isinstance(expected, list):
        expected = "COMBO"
    if received == expected:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return len(got & want) > 0


def is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


class _Validator:
    def __init__(self, prompt: dict[str, Any], defs: NodeDefs, custom: CustomValidator) -> None:
        self.prompt = prompt
        self.defs = defs
        self.custom = custom
        self.validated: dict[str, tuple[bool, list[Error], str]] = {}

    def _input_info(self, class_type: str, name: str) -> tuple[Any, str, dict[str, Any]]:
        spec_all = self.defs[class_type].get("input", {})
        for category in ("required", "optional"):
            spec = spec_all.get(category, {}).get(name)
            if spec is not None:
                extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                return spec[0], category, extra
        raise KeyError(name)

    def validate(self, unique_id: str) -> tuple[bool, list[Error], str]:
        if unique_id in self.validated:
            return self.validated[unique_id]
        inputs = self.prompt[unique_id]["inputs"]
        class_type = self.prompt[unique_id]["class_type"]
        spec_all = self.defs[class_type].get("input", {})
        names = list(spec_all.get("required", {})) + [
            n for n in spec_all.get("optional", {}) if n not in spec_all.get("required", {})
        ]
        custom_inputs = CUSTOM_VALIDATED.get(class_type, ())
        errors: list[Error] = []
        valid = True
        for x in names:
            input_type, category, extra = self._input_info(class_type, x)
            info = [input_type, extra]
            if x not in inputs:
                if category == "required":
                    errors.append(
                        _error(
                            "required_input_missing",
                            "Required input is missing",
                            x,
                            {"input_name": x},
                        )
                    )
                continue
            val = inputs[x]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append(
                        _error(
                            "bad_linked_input",
                            "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                            x,
                            {"input_name": x, "input_config": info, "received_value": val},
                        )
                    )
                    continue
                o_id = val[0]
                o_class_type = self.prompt[o_id]["class_type"]
                returns = tuple(self.defs[o_class_type].get("output", []))
                received_type = returns[val[1]]
                if not _types_compatible(received_type, input_type):
                    shown = "COMBO" if isinstance(input_type, list) else input_type
                    errors.append(
                        _error(
                            "return_type_mismatch",
                            "Return type mismatch between linked nodes",
                            f"{x}, received_type({received_type}) mismatch input_type({shown})",
                            {
                                "input_name": x,
                                "input_config": info,
                                "received_type": received_type,
                                "linked_node": val,
                            },
                        )
                    )
                    continue
                try:
                    inner = self.validate(o_id)
                    if inner[0] is False:
                        valid = False
                        continue
                except Exception as ex:
                    typ, _, tb = sys.exc_info()
                    valid = False
                    reasons = [
                        _error(
                            "exception_during_inner_validation",
                            "Exception when validating inner node",
                            str(ex),
                            {
                                "input_name": x,
                                "input_config": info,
                                "exception_message": str(ex),
                                "exception_type": full_type_name(typ or type(ex)),
                                "traceback": traceback.format_tb(tb),
                                "linked_node": val,
                            },
                        )
                    ]
                    self.validated[o_id] = (False, reasons, o_id)
                    continue
            else:
                problem = self._check_value(
                    x, val, input_type, extra, info, inputs, x in custom_inputs
                )
                if problem is not None:
                    errors.append(problem)
                    continue
        for x in custom_inputs:
            if x in inputs and not is_link(inputs[x]):
                result = self.custom(class_type, x, inputs[x])
                if result is not True:
                    details = x if result is False else f"{x} - {result}"
                    errors.append(
                        _error(
                            "custom_validation_failed",
                            "Custom validation failed for node",
                            details,
                            {"input_name": x},
                        )
                    )
        ret = (False, errors, unique_id) if errors or valid is not True else (True, [], unique_id)
        self.validated[unique_id] = ret
        return ret

    def _check_value(
        self,
        x: str,
        val: Any,
        input_type: Any,
        extra: dict[str, Any],
        info: list[Any],
        inputs: dict[str, Any],
        custom: bool,
    ) -> Error | None:
        try:
            if isinstance(val, dict) and "__value__" in val:
                val = val["__value__"]
                inputs[x] = val
            if input_type == "INT":
                val = int(val)
            elif input_type == "FLOAT":
                val = float(val)
            elif input_type == "STRING":
                val = str(val)
            elif input_type == "BOOLEAN":
                val = bool(val)
            inputs[x] = val
        except Exception as ex:
            return _error(
                "invalid_input_type",
                f"Failed to convert an input value to a {input_type} value",
                f"{x}, {val}, {ex}",
                {
                    "input_name": x,
                    "input_config": info,
                    "received_value": val,
                    "exception_message": str(ex),
                },
            )
        if custom:
            return None
        try:
            if "min" in extra and val < extra["min"]:
                return _error(
                    "value_smaller_than_min",
                    "Value {} smaller than min of {}".format(val, extra["min"]),
                    x,
                    {"input_name": x, "input_config": info, "received_value": val},
                )
            if "max" in extra and val > extra["max"]:
                return _error(
                    "value_bigger_than_max",
                    "Value {} bigger than max of {}".format(val, extra["max"]),
                    x,
                    {"input_name": x, "input_config": info, "received_value": val},
                )
        except TypeError as ex:
            return _error(
                "invalid_input_type",
                f"Failed to convert an input value to a {input_type} value",
                f"{x}, {val}, {ex}",
                {
                    "input_name": x,
                    "input_config": info,
                    "received_value": val,
                    "exception_message": str(ex),
                },
            )
        if isinstance(input_type, list) or input_type == "COMBO":
            options = extra.get("options", []) if input_type == "COMBO" else input_type
            if val not in options:
                input_config: Any = info
                if len(options) > 20:
                    list_info = f"(list of length {len(options)})"
                    input_config = None
                else:
                    list_info = str(options)
                return _error(
                    "value_not_in_list",
                    "Value not in list",
                    f"{x}: '{val}' not in {list_info}",
                    {"input_name": x, "input_config": input_config, "received_value": val},
                )
        return None


def validate_prompt(
    prompt: dict[str, Any],
    defs: NodeDefs,
    custom: CustomValidator,
    partial_targets: list[str] | None = None,
) -> Verdict:
    """ComfyUI's verdict on `prompt`. Raises (TypeError, AttributeError) on a prompt that is not
    a dict of dicts, exactly where ComfyUI raises, so the HTTP layer can answer 500 like it."""
    outputs: list[str] = []
    for x in prompt:
        if "class_type" not in prompt[x]:
            return Verdict(
                False,
                _error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{x}'",
                ),
                [],
            )
        class_type = prompt[x]["class_type"]
        definition = defs.get(class_type) if isinstance(class_type, str) else None
        if definition is None:
            return Verdict(
                False,
                _error(
                    "invalid_prompt",
                    f"Cannot execute because node {class_type} does not exist.",
                    f"Node ID '#{x}'",
                ),
                [],
            )
        if definition.get("output_node") is True and (
            partial_targets is None or x in partial_targets
        ):
            outputs.append(x)
    if not outputs:
        return Verdict(False, _error("prompt_no_outputs", "Prompt has no outputs"), [])

    validator = _Validator(prompt, defs, custom)
    good: list[str] = []
    errors: list[tuple[str, list[Error]]] = []
    node_errors: dict[str, Any] = {}
    for o in outputs:
        try:
            valid, reasons, _ = validator.validate(o)
        except Exception as ex:
            typ, _, tb = sys.exc_info()
            valid = False
            reasons = [
                _error(
                    "exception_during_validation",
                    "Exception when validating node",
                    str(ex),
                    {
                        "exception_type": full_type_name(typ or type(ex)),
                        "traceback": traceback.format_tb(tb),
                    },
                )
            ]
            validator.validated[o] = (False, reasons, o)
        if valid is True:
            good.append(o)
            continue
        if reasons:
            errors.append((o, reasons))
        for node_id, result in validator.validated.items():
            if result[0] is not True and result[1]:
                if node_id not in node_errors:
                    node_errors[node_id] = {
                        "errors": result[1],
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    }
                node_errors[node_id]["dependent_outputs"].append(o)
    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in errors for e in errs)
        return Verdict(
            False,
            _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details),
            [],
            node_errors,
        )
    return Verdict(True, None, good, node_errors)
