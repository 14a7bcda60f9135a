"""Pose keypoints: the one in-memory layout every pose source maps to.

Layout (OpenPose/DWPose conventions, pixel coordinates of the frame the points belong to):
  body  (18, 3)  OpenPose-18 order: nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow,
                 l-wrist, r-hip, r-knee, r-ankle, l-hip, l-knee, l-ankle, r-eye, l-eye, r-ear, l-ear
  left_hand / right_hand (21, 3)   OpenPose hand order (wrist first)
  face  (68, 3)  iBUG-68 order
Each row is (x, y, confidence); confidence 0 marks a missing point (x, y are then ignored).
A part that the source did not produce at all is None.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

NUM_BODY = 18
NUM_HAND = 21
NUM_FACE = 68


@dataclass
class Person:
    body: np.ndarray  # (18, 3) float32
    left_hand: Optional[np.ndarray] = None  # (21, 3)
    right_hand: Optional[np.ndarray] = None  # (21, 3)
    face: Optional[np.ndarray] = None  # (68, 3)

    def copy(self) -> "Person":
        c = lambda a: None if a is None else np.array(a, dtype=np.float32, copy=True)
        return Person(c(self.body), c(self.left_hand), c(self.right_hand), c(self.face))


@dataclass
class PoseFrame:
    """All people found in one frame of size width x height (pixels)."""

    width: int
    height: int
    people: List[Person] = field(default_factory=list)

    @property
    def main(self) -> Optional[Person]:
        """The person X-Dyna animates from: the first one (sources order people by size/score)."""
        return self.people[0] if self.people else None
