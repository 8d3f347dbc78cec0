"""`batchgate simulate-upstream`: every knob of SimulatorOptions as a command-line flag."""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any

import orjson

from proxy.simulator.options import SimulatorOptions


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _json_object(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected JSON, got {raw!r}") from exc


def _value_type(annotation: Any) -> Any:
    """The argparse `type` for a field: int, float, str, or JSON for mappings (Optional[...] unwrapped);
    booleans are given as text (true/false) and parsed by the model."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    if typing.get_origin(annotation) is typing.Literal:
        return str
    if typing.get_origin(annotation) is dict:
        return _json_object
    return annotation if annotation in (int, float, str) else str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one `--knob-name VALUE` flag per SimulatorOptions field (defaults are the model's)."""
    group = parser.add_argument_group("simulated upstream knobs (see docs/simulator.md)")
    for name, info in SimulatorOptions.model_fields.items():
        choices = None
        if typing.get_origin(info.annotation) is typing.Literal:
            choices = list(typing.get_args(info.annotation))
        group.add_argument(
            _flag(name),
            dest=f"sim_{name}",
            type=_value_type(info.annotation),
            choices=choices,
            default=None,
            help=f"{info.description or name} (default: {info.get_default(call_default_factory=True)})",
        )


def options_from_args(args: argparse.Namespace) -> SimulatorOptions:
    """SimulatorOptions from parsed flags; flags left out keep their defaults. ValueError on bad values."""
    given = {
        name: getattr(args, f"sim_{name}")
        for name in SimulatorOptions.model_fields
        if getattr(args, f"sim_{name}", None) is not None
    }
    return SimulatorOptions.model_validate(given)


def serve(options: SimulatorOptions, host: str, port: int) -> None:
    """Run the simulator with uvicorn until interrupted (blocking)."""
    # Imported here: `batchgate worker` builds this command's arguments too, and must not load the web framework.
    import uvicorn  # noqa: PLC0415

    from proxy.simulator.app import create_simulator_app  # noqa: PLC0415

    uvicorn.run(create_simulator_app(options), host=host, port=port, log_level="warning", access_log=False)
