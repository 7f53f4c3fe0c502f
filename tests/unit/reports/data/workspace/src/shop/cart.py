"""Shopping cart: two unused imports and a line that is too long (ruff F401, E501)."""

import json
import os
from decimal import Decimal


def total(prices: list[Decimal]) -> Decimal:
    return sum(prices, Decimal(0))


def describe(prices: list[Decimal]) -> str:
    return "the cart holds " + str(len(prices)) + " items for a total of " + str(total(prices)) + " euros"
