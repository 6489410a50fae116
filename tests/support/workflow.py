"""Build small UI-format workflows inline for the converter's unit tests."""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]

#: A tiny object_info in the server's shape, enough for the unit tests.
OBJECT_INFO: JSON = {
    "CheckpointLoaderSimple": {
        "input": {"required": {"ckpt_name": [["a.safetensors", "b.safetensors"], {}]}},
        "input_order": {"required": ["ckpt_name"]},
        "output": ["MODEL", "CLIP", "VAE"],
        "display_name": "Load Checkpoint",
    },
    "KSampler": {
        "input": {
            "required": {
                "model": ["MODEL", {}],
                "seed": ["INT", {"default": 0, "control_after_generate": True}],
                "steps": ["INT", {"default": 20}],
                "cfg": ["FLOAT", {"default": 8.0}],
                "sampler_name": [["euler", "dpmpp_2m"], {}],
                "scheduler": [["normal", "simple"], {}],
                "positive": ["CONDITIONING", {}],
                "negative": ["CONDITIONING", {}],
                "latent_image": ["LATENT", {}],
                "denoise": ["FLOAT", {"default": 1.0}],
            }
        },
        "input_order": {
            "required": [
                "model",
                "seed",
                "steps",
                "cfg",
                "sampler_name",
                "scheduler",
                "positive",
                "negative",
                "latent_image",
                "denoise",
            ]
        },
        "output": ["LATENT"],
        "display_name": "KSampler",
    },
    "RandomNoise": {
        "input": {"required": {"noise_seed": ["INT", {"default": 0}]}},
        "input_order": {"required": ["noise_seed"]},
        "output": ["NOISE"],
        "display_name": "RandomNoise",
    },
    "NoControl": {
        "input": {"required": {"seed": ["INT", {"default": 3, "control_after_generate": False}]}},
        "input_order": {"required": ["seed"]},
        "output": ["INT"],
        "display_name": "No Control",
    },
    "CLIPTextEncode": {
        "input": {
            "required": {
                "text": ["STRING", {"multiline": True, "dynamicPrompts": True}],
                "clip": ["CLIP", {}],
            }
        },
        "input_order": {"required": ["text", "clip"]},
        "output": ["CONDITIONING"],
        "display_name": "CLIP Text Encode (Prompt)",
    },
    "EmptyLatentImage": {
        "input": {
            "required": {
                "width": ["INT", {"default": 512}],
                "height": ["INT", {"default": 512}],
                "batch_size": ["INT", {"default": 1}],
            }
        },
        "input_order": {"required": ["width", "height", "batch_size"]},
        "output": ["LATENT"],
        "display_name": "Empty Latent Image",
    },
    "VAEDecode": {
        "input": {"required": {"samples": ["LATENT", {}], "vae": ["VAE", {}]}},
        "input_order": {"required": ["samples", "vae"]},
        "output": ["IMAGE"],
        "display_name": "VAE Decode",
    },
    "ImageInvert": {
        "input": {"required": {"image": ["IMAGE", {}]}},
        "input_order": {"required": ["image"]},
        "output": ["IMAGE"],
        "display_name": "Invert Image",
    },
    "ImageBlur": {
        "input": {
            "required": {
                "image": ["IMAGE", {}],
                "blur_radius": ["INT", {"default": 1}],
                "sigma": ["FLOAT", {"default": 1.0}],
            }
        },
        "input_order": {"required": ["image", "blur_radius", "sigma"]},
        "output": ["IMAGE"],
        "display_name": None,
    },
    "SaveImage": {
        "input": {
            "required": {
                "images": ["IMAGE", {}],
                "filename_prefix": ["STRING", {"default": "ComfyUI"}],
            },
            "hidden": {"prompt": "PROMPT"},
        },
        "input_order": {"required": ["images", "filename_prefix"], "hidden": ["prompt"]},
        "output": [],
        "display_name": "Save Image",
    },
    "PreviewImage": {
        "input": {"required": {"images": ["IMAGE", {}]}},
        "input_order": {"required": ["images"]},
        "output": [],
        "display_name": "Preview Image",
    },
    "LoadImage": {
        "input": {"required": {"image": [["example.png"], {"image_upload": True}]}},
        "input_order": {"required": ["image"]},
        "output": ["IMAGE", "MASK"],
        "display_name": "Load Image",
    },
    "LoadImageMask": {
        "input": {
            "required": {
                "image": [["m.png"], {"image_upload": True}],
                "channel": [["alpha", "red", "green", "blue"], {}],
            }
        },
        "input_order": {"required": ["image", "channel"]},
        "output": ["MASK"],
        "display_name": "Load Image (as Mask)",
    },
    "Load3D": {
        "input": {
            "required": {
                "model_file": [[], {"file_upload": True}],
                "image": ["LOAD_3D", {}],
                "width": ["INT", {"default": 1024}],
            }
        },
        "input_order": {"required": ["model_file", "image", "width"]},
        "output": ["IMAGE"],
        "display_name": "Load 3D",
    },
    "LoadImageOutput": {
        "input": {
            "required": {
                "image": [
                    "COMBO",
                    {
                        "image_upload": True,
                        "remote": {"route": "/internal/files/output", "refresh_button": True},
                    },
                ]
            }
        },
        "input_order": {"required": ["image"]},
        "output": ["IMAGE", "MASK"],
        "display_name": "Load Image (from Outputs)",
    },
    "LoadAudio": {
        "input": {"required": {"audio": [[], {"audio_upload": True}]}},
        "input_order": {"required": ["audio"]},
        "output": ["AUDIO"],
        "display_name": "Load Audio",
    },
    "Options": {
        "input": {
            "required": {
                "flag": ["BOOLEAN", {}],
                "count": ["INT", {}],
                "mode": ["COMBO", {"options": ["first", "second"]}],
                "label": ["STRING", {}],
                "forced": ["INT", {"forceInput": True}],
                "points": ["STRING", {"default": "x"}],
            }
        },
        "input_order": {"required": ["flag", "count", "mode", "label", "forced", "points"]},
        "output": ["INT"],
        "display_name": "Options",
    },
    "PrimitiveInt": {
        "input": {"required": {"value": ["INT", {"control_after_generate": True}]}},
        "input_order": {"required": ["value"]},
        "output": ["INT"],
        "display_name": "Int",
    },
}


def node(
    node_id: int | str,
    node_type: str,
    *,
    inputs: list[JSON] | None = None,
    outputs: list[JSON] | None = None,
    widgets_values: Any = None,
    mode: int = 0,
    title: str | None = None,
) -> JSON:
    raw: JSON = {"id": node_id, "type": node_type, "mode": mode}
    raw["inputs"] = inputs or []
    raw["outputs"] = outputs or []
    if widgets_values is not None:
        raw["widgets_values"] = widgets_values
    if title is not None:
        raw["title"] = title
    return raw


def inp(name: str, type_: str, link: int | None = None, *, widget: bool = False) -> JSON:
    slot: JSON = {"name": name, "type": type_, "link": link}
    if widget:
        slot["widget"] = {"name": name}
    return slot


def out(name: str, type_: str, links: list[int] | None = None) -> JSON:
    return {"name": name, "type": type_, "links": links or []}


def ui(nodes: list[JSON], links: list[list[Any]], **extra: Any) -> JSON:
    """A root graph; links as [id, origin, origin_slot, target, target_slot, type]."""
    return {"nodes": nodes, "links": links, "version": 0.4, **extra}


def sg_link(
    link_id: int, origin: int, origin_slot: int, target: int, target_slot: int, type_: str
) -> JSON:
    """A link in a subgraph definition (object form)."""
    return {
        "id": link_id,
        "origin_id": origin,
        "origin_slot": origin_slot,
        "target_id": target,
        "target_slot": target_slot,
        "type": type_,
    }


def subgraph(
    sg_id: str,
    nodes: list[JSON],
    links: list[JSON],
    inputs: list[tuple[str, str]],
    outputs: list[tuple[str, str]],
) -> JSON:
    return {
        "id": sg_id,
        "name": sg_id,
        "inputNode": {"id": -10},
        "outputNode": {"id": -20},
        "inputs": [{"name": name, "type": type_} for name, type_ in inputs],
        "outputs": [{"name": name, "type": type_} for name, type_ in outputs],
        "nodes": nodes,
        "links": links,
    }


def txt2img() -> JSON:
    """The default text-to-image graph, with a titled node, two notes and a seed control."""
    return ui(
        [
            node(
                4,
                "CheckpointLoaderSimple",
                outputs=[
                    out("MODEL", "MODEL", [1]),
                    out("CLIP", "CLIP", [3, 5]),
                    out("VAE", "VAE", [8]),
                ],
                widgets_values=["b.safetensors"],
            ),
            node(
                6,
                "CLIPTextEncode",
                inputs=[inp("clip", "CLIP", 3)],
                outputs=[out("CONDITIONING", "CONDITIONING", [4])],
                widgets_values=["a cat"],
                title="Positive",
            ),
            node(
                7,
                "CLIPTextEncode",
                inputs=[inp("clip", "CLIP", 5)],
                outputs=[out("CONDITIONING", "CONDITIONING", [6])],
                widgets_values=["blurry"],
            ),
            node(
                5,
                "EmptyLatentImage",
                outputs=[out("LATENT", "LATENT", [2])],
                widgets_values=[768, 512, 2],
            ),
            node(
                3,
                "KSampler",
                inputs=[
                    inp("model", "MODEL", 1),
                    inp("positive", "CONDITIONING", 4),
                    inp("negative", "CONDITIONING", 6),
                    inp("latent_image", "LATENT", 2),
                ],
                outputs=[out("LATENT", "LATENT", [7])],
                widgets_values=[42, "randomize", 12, 6.5, "dpmpp_2m", "simple", 0.9],
            ),
            node(
                8,
                "VAEDecode",
                inputs=[inp("samples", "LATENT", 7), inp("vae", "VAE", 8)],
                outputs=[out("IMAGE", "IMAGE", [9])],
            ),
            node(9, "SaveImage", inputs=[inp("images", "IMAGE", 9)], widgets_values=["out"]),
            node(10, "Note", widgets_values=["remember"]),
            node(11, "MarkdownNote", widgets_values=["# doc"]),
        ],
        [
            [1, 4, 0, 3, 0, "MODEL"],
            [2, 5, 0, 3, 3, "LATENT"],
            [3, 4, 1, 6, 0, "CLIP"],
            [4, 6, 0, 3, 1, "CONDITIONING"],
            [5, 4, 1, 7, 0, "CLIP"],
            [6, 7, 0, 3, 2, "CONDITIONING"],
            [7, 3, 0, 8, 0, "LATENT"],
            [8, 4, 2, 8, 1, "VAE"],
            [9, 8, 0, 9, 0, "IMAGE"],
        ],
    )


BLUR = "11111111-0000-0000-0000-000000000001"


def blur_subgraph(inner_mode: int = 0) -> JSON:
    """image, blur_radius (a widget), sigma (a widget) -> ImageInvert -> ImageBlur -> IMAGE."""
    return subgraph(
        BLUR,
        [
            node(
                3,
                "ImageInvert",
                inputs=[inp("image", "IMAGE", 1)],
                outputs=[out("IMAGE", "IMAGE", [2])],
                mode=inner_mode,
            ),
            node(
                4,
                "ImageBlur",
                inputs=[
                    inp("image", "IMAGE", 2),
                    inp("blur_radius", "INT", 3, widget=True),
                    inp("sigma", "FLOAT", 5, widget=True),
                ],
                outputs=[out("IMAGE", "IMAGE", [4])],
                widgets_values=[1, 2.5],
            ),
        ],
        [
            sg_link(1, -10, 0, 3, 0, "IMAGE"),
            sg_link(2, 3, 0, 4, 0, "IMAGE"),
            sg_link(3, -10, 1, 4, 1, "INT"),
            sg_link(5, -10, 2, 4, 2, "FLOAT"),
            sg_link(4, 4, 0, -20, 0, "IMAGE"),
        ],
        [("image", "IMAGE"), ("blur_radius", "INT"), ("sigma", "FLOAT")],
        [("IMAGE", "IMAGE")],
    )


def with_instance(
    *, instance_mode: int = 0, inner_mode: int = 0, radius_link: bool = False
) -> JSON:
    inputs = [inp("image", "IMAGE", 1)]
    nodes = [
        node(1, "LoadImage", outputs=[out("IMAGE", "IMAGE", [1])], widgets_values=["a.png"]),
        node(
            7,
            BLUR,
            inputs=inputs,
            outputs=[out("IMAGE", "IMAGE", [2])],
            widgets_values=[9, 0.75],
            mode=instance_mode,
        ),
        node(8, "SaveImage", inputs=[inp("images", "IMAGE", 2)], widgets_values=["sg"]),
    ]
    links: list[list[Any]] = [[1, 1, 0, 7, 0, "IMAGE"], [2, 7, 0, 8, 0, "IMAGE"]]
    if radius_link:
        nodes.append(
            node(2, "PrimitiveInt", outputs=[out("INT", "INT", [3])], widgets_values=[5, "fixed"])
        )
        inputs.append(inp("blur_radius", "INT", 3, widget=True))
        links.append([3, 2, 0, 7, 1, "INT"])
    return ui(nodes, links, definitions={"subgraphs": [blur_subgraph(inner_mode)]})


def group_graph() -> JSON:
    """LoadImage -> workflow>Blurry (ImageInvert, ImageBlur) -> SaveImage."""
    group = {
        "nodes": [
            {
                "id": -1,
                "type": "ImageInvert",
                "index": 0,
                "mode": 0,
                "inputs": [{"name": "image", "type": "IMAGE"}],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": []}],
            },
            {
                "id": -1,
                "type": "ImageBlur",
                "index": 1,
                "mode": 0,
                "inputs": [
                    {"name": "image", "type": "IMAGE"},
                    {"name": "blur_radius", "type": "INT", "widget": {"name": "blur_radius"}},
                    {"name": "sigma", "type": "FLOAT", "widget": {"name": "sigma"}},
                ],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": []}],
                "widgets_values": [1, 1],
            },
        ],
        "links": [[None, 0, 0, 0, 1, "IMAGE"], [0, 0, 1, 0, 2, "IMAGE"]],
        "external": [[1, 0, "IMAGE"]],
    }
    graph = ui(
        [
            node(1, "LoadImage", outputs=[out("IMAGE", "IMAGE", [5])]),
            node(
                5,
                "workflow>Blurry",
                inputs=[inp("image", "IMAGE", 5)],
                outputs=[out("IMAGE", "IMAGE", [4])],
                widgets_values=[3, 0.25],
            ),
            node(4, "SaveImage", inputs=[inp("images", "IMAGE", 4)], widgets_values=["gn"]),
        ],
        [[4, 5, 0, 4, 0, "IMAGE"], [5, 1, 0, 5, 0, "IMAGE"]],
        extra={"groupNodes": {"Blurry": group}},
    )
    return graph
