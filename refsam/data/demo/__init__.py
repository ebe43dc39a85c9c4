"""Embedded demo datasets: deterministic synthetic data in the published raw formats.

- :mod:`.scenes`: synthetic scenes (coloured shapes that move, occlude and leave) and their
  rendering;
- :mod:`.language`: referring expressions built from the objects' attributes;
- :mod:`.generate`: the plan of every dataset from ``(seed, scale)`` and
  :func:`generate_demo`, which renders it;
- :mod:`.writers` (Ref-YouTube-VOS, Ref-DAVIS17, MeViS) and :mod:`.coco` (RefCOCO/+/g):
  the plan written in each published raw layout (DATA.md).
"""

from refsam.data.demo.generate import SCALES, DemoPlan, build_plan, generate_demo

__all__ = ["SCALES", "DemoPlan", "build_plan", "generate_demo"]
