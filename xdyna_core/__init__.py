"""X-Dyna core: pure PyTorch models, checkpoint loading, sampler and preprocessing.

Never imports ComfyUI (`comfy`, `folder_paths`, `nodes`); a test enforces that.
"""
__version__ = "0.1.0"
