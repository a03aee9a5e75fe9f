"""The device choices are written once (``SternumSSMLib.devices``) and every command offers the same."""

from __future__ import annotations

import argparse

import pytest
from SternumSSMLib.cli import build_parser
from SternumSSMLib.devices import DEVICES, resolve_device


def device_choices(parser: argparse.ArgumentParser) -> dict[str, tuple]:
    """Subcommand -> the choices of its --device option, for every subcommand that has one."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                for option in subparser._actions:
                    if "--device" in option.option_strings:
                        found[name] = tuple(option.choices)
    return found


def test_every_command_offers_the_same_devices():
    choices = device_choices(build_parser())
    assert {"predict", "place-landmarks", "train-landmarks"} <= set(choices)
    assert set(choices.values()) == {DEVICES}
    assert DEVICES == ("auto", "cuda", "mps", "cpu")


def test_an_unknown_device_is_named_with_the_choices():
    with pytest.raises(ValueError, match="'gpu' must be one of auto, cuda, mps, cpu"):
        resolve_device("gpu")
    assert resolve_device("cpu").type == "cpu"
