"""What the other APIs comfyrun speaks share, kept out of the routers.

Pure translations between comfyrun's job records and other wire shapes: ComfyUI's queue,
history and /api/jobs (`comfy`), job events → ComfyUI websocket messages (`comfy_events`),
RunPod's, the plain /run variant's and the task variant's (`runpod`). Two modules do I/O through
the app context: the ComfyUI websocket session (`comfy_socket`) and ComfyUI-style uploads kept
as assets (`comfy_uploads`). The routers in comfyrun.api.routes call these; none holds job
logic (that is JobService's).
"""
