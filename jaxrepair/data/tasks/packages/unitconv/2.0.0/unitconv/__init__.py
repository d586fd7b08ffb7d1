"""unitconv 2.x: convert between units of mass, volume and length.

Breaking change from 1.x: the conversion functions moved to ``unitconv.core``.
"""

from unitconv.errors import UnitError

__version__ = "2.0.0"
__all__ = ["UnitError", "__version__"]
