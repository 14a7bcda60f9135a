"""Thin ComfyUI adapters over xdyna_core (the only place that touches ComfyUI is comfy_bridge)."""
