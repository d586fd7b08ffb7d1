"""recipes: scaling, metric conversion, shopping lists."""
