"""xdyna_core.loading"""
