"""Stock levels in kg, fed by movements given in any mass unit."""

from unitconv.core import convert


class StockError(ValueError):
    """A movement that would make stock negative."""


class Stock:
    def __init__(self):
        self.levels = {}  # sku -> kg
        self.history = []

    def level(self, sku):
        return self.levels.get(sku, 0.0)

    def receive(self, sku, amount, unit):
        kg = convert(amount, unit, "kg")
        self.levels[sku] = self.level(sku) + kg
        self.history.append(("in", sku, kg))
        return self.levels[sku]

    def ship(self, sku, amount, unit):
        kg = convert(amount, unit, "kg")
        if kg > self.level(sku) + 1e-9:
            raise StockError(f"{sku}: cannot ship {kg:g} kg, only {self.level(sku):g} kg left")
        self.levels[sku] = self.level(sku) - kg
        self.history.append(("out", sku, kg))
        return self.levels[sku]

    def shipped_total(self, sku):
        return sum(kg for kind, s, kg in self.history if kind == "out" and s == sku)
