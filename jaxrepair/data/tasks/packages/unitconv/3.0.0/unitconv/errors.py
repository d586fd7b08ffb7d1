class UnitError(ValueError):
    """Unknown unit, or units of different dimensions."""
