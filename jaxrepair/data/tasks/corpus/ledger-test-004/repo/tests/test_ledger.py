import pytest

from ledger.accounts import AccountError, account_id, load_accounts
from ledger.report import balances, format_cents, memo_words, monthly_expenses, net_worth
from ledger.transactions import parse_amount, parse_transactions

ACCOUNTS = """
[Checking Account]
kind = asset
opening = 100000

[Credit Card]
kind = liability
opening = -5000

[Salary]
kind = income

[Groceries & Food]
kind = expense
"""

TXS = """# date,from,to,amount,memo
2024-01-03,salary,checking_account,2500.00,january pay
2024-01-05,checking_account,groceries_food,45.10,weekly shop
2024-01-20,credit_card,groceries_food,12.5,
2024-02-02,checking_account,credit_card,50,card payment
2024-02-09,checking_account,groceries_food,60.00,big weekly shop
"""


def setup():
    accounts = load_accounts(ACCOUNTS)
    return accounts, parse_transactions(TXS, accounts)


def test_account_ids():
    assert account_id("Groceries & Food") == "groceries_food"
    assert sorted(load_accounts(ACCOUNTS)) == [
        "checking_account", "credit_card", "groceries_food", "salary"]


def test_opening_default():
    accounts = load_accounts(ACCOUNTS)
    assert accounts["salary"]["opening"] == 0
    assert accounts["credit_card"]["opening"] == -5000


def test_bad_kind():
    with pytest.raises(AccountError):
        load_accounts("[Cash]\nkind = pocket\n")


def test_parse_amount():
    assert parse_amount("12.34") == 1234
    assert parse_amount("12.5") == 1250
    assert parse_amount("7") == 700
    for bad in ("-1", "1.234", "abc", "1.x"):
        with pytest.raises(ValueError):
            parse_amount(bad)


def test_unknown_account():
    with pytest.raises(AccountError):
        parse_transactions("2024-01-01,nowhere,salary,1", load_accounts(ACCOUNTS))


def test_balances():
    bal = balances(*setup())
    assert bal == {
        "checking_account": 100000 + 250000 - 4510 - 5000 - 6000,
        "credit_card": -5000 - 1250 + 5000,
        "salary": -250000,
        "groceries_food": 4510 + 1250 + 6000,
    }


def test_net_worth():
    assert net_worth(*setup()) == (100000 + 250000 - 4510 - 5000 - 6000) + (-5000 - 1250 + 5000)


def test_monthly_expenses():
    assert monthly_expenses(*setup()) == {"2024-01": 5760, "2024-02": 6000}


def test_format_cents():
    assert format_cents(123456) == "1234.56"
    assert format_cents(-5) == "-0.05"
    assert format_cents(0) == "0.00"


def test_memo_words():
    _, txs = setup()
    assert memo_words(txs) == 9
