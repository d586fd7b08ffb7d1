"""Accounts loaded from an INI file: one section per account."""

import confparse
import slugkit

KINDS = ("asset", "liability", "income", "expense")


class AccountError(ValueError):
    """Bad account definition or unknown account."""


def account_id(name):
    return slugkit.slugify(name, "_")


def load_accounts(text):
    """{account id: {"name", "kind", "opening"}} from INI text."""
    cfg = confparse.parse(text)
    accounts = {}
    for section in cfg:
        kind = cfg[section]["kind"]
        if kind not in KINDS:
            raise AccountError(f"account {section!r}: unknown kind {kind!r}")
        opening = int(cfg.get(section, {}).get("opening", "0"))
        accounts[account_id(section)] = {"name": section, "kind": kind, "opening": opening}
    return accounts
