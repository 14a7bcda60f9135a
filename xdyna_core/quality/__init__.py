"""Scores of an animation result: pose agreement with the driving clip, identity of the reference
person, temporal stability at context-window seams, and the report (JSON + plot) of all three."""
