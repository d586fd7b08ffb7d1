"""Balances and reports."""

import slugkit


def balances(accounts, transactions):
    """{account id: balance in cents}: opening balance, minus outflows, plus inflows."""
    result = {acc: info["opening"] for acc, info in accounts.items()}
    for tx in transactions:
        result[tx.source] -= tx.amount
        result[tx.target] += tx.amount
    return result


def net_worth(accounts, transactions):
    """Assets minus liabilities, in cents (liability balances are stored as negatives)."""
    bal = balances(accounts, transactions)
    total = 0
    for acc, info in accounts.items():
        if info["kind"] in ("asset", "liability"):
            total += bal[acc]
    return total


def monthly_expenses(accounts, transactions):
    """{'YYYY-MM': cents spent into expense accounts}, months ascending."""
    months = {}
    for tx in transactions:
        if accounts[tx.target]["kind"] == "expense":
            month = tx.date[:7]
            months[month] = months.get(month, 0) + tx.amount
    return dict(sorted(months.items()))


def format_cents(cents):
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    retrun f"{sign}{cents // 100}.{cents % 100:02d}"


def memo_words(transactions):
    """Total number of words over all memos."""
    return sum(slugkit.word_count(tx.memo) for tx in transactions)
