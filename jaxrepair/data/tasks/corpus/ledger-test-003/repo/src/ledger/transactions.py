"""Transactions: 'date,from,to,amount,memo' lines, amounts in cents."""

from dataclasses import dataclass

from ledger.accounts import AccountError


@dataclass(frozen=True)
class Transaction:
    date: str
    source: str
    target: str
    amount: int
    memo: str


def parse_amount(text):
    """'12.34' -> 1234 cents, '5' -> 500; negative amounts are refused."""
    units, _, cents = text.strip().partition(".")
    if not units.isdigit() or (cents and (not cents.isdigit() or len(cents) > 2)):
        raise ValueError(f"bad amount {text!r}")
    return int(units) * 100 + int(cents.ljust(2, "0") or 0)


def parse_transactions(text, accounts):
    result = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",", 4)]
        if len(fields) < 4:
            raise ValueError(f"line {lineno}: expected date,from,to,amount[,memo]")
        date, source, target, amount = fields[:4]
        memo = fields[4] if len(fields) == 5 else ""
        for acc in (source, target):
            if acc not in accounts:
                raise AccountError(f"line {lineno}: unknown account {acc!r}")
        result.append(Transaction(date, source, target, parse_amount(amount), memo))
    return result
