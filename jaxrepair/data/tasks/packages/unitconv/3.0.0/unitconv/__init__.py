"""unitconv 3.x: convert between units of mass, volume and length.

Breaking change from 2.x: ``unitconv.core.convert`` takes keyword-only ``src``/``dst`` and
returns a ``Quantity`` (use ``.value`` for the number).
"""

from unitconv.errors import UnitError

__version__ = "3.0.0"
__all__ = ["UnitError", "__version__"]
