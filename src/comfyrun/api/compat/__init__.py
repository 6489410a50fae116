"""Pure translations between comfyrun's job records and the wire shapes of the APIs comfyrun also
speaks: ComfyUI's own (`comfy`, `comfy_events`), RunPod's and the plain /run variant (`runpod`),
and the task variant (`tasks`). No I/O here; the routers in comfyrun.api.routes call these."""
