"""`python -m comfyrun.comfy.emulator [ComfyUI flags]`."""

from comfyrun.comfy.emulator.cli import main

raise SystemExit(main())
