"""Placeholder until written."""


def train() -> None:
    raise NotImplementedError
