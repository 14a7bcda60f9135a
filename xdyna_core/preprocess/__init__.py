"""xdyna_core.preprocess"""
