"""xdyna_core.sampling"""
