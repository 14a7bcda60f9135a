"""xdyna_core.models"""
