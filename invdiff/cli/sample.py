"""Placeholder until written."""


def sample() -> None:
    raise NotImplementedError
