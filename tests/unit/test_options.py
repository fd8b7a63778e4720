"""Run options are declared once, on RunParams: the CLI of run, serve and demo, the Prefect
deployment's parameters and the README's synopsis follow that declaration, and its validation
reaches the command line as one line, exit 2."""

import argparse
import re
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest
import yaml
from pydantic import ValidationError

from embedlake.flows import cli
from embedlake.tasks.params import RunParams, check_option, explain, run_options

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def _shown_values(field, flag) -> str | None:
    """What a synopsis shows after the flag: a Literal's values, else the metavar."""
    if get_origin(field.annotation) is Literal:
        return "|".join(get_args(field.annotation))
    return flag.metavar


def _readme_run_synopsis() -> str:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"^(embedlake run SOURCE .*?)^embedlake sql", readme, re.S | re.M)
    assert block, "README has no `embedlake run SOURCE` synopsis before `embedlake sql`"
    return block.group(1)


def test_readme_run_synopsis_matches_the_declared_options():
    synopsis = _readme_run_synopsis()
    # `[--flag VALUES]`, `[--flag VALUES]...` (repeatable) or `[--flag]` (a switch); the
    # sidecar key sits inside the metadata bracket: `[--metadata FILE [--key path|image_id]]`
    option = re.compile(
        r"\[(?P<flag>--[a-z-]+)(?: (?P<values>(?:[^\s\[\]]|\[[^\s\]]*\])+))?"
        r"(?:\]+(?P<repeat>\.\.\.)?)?"
    )
    found = {m["flag"]: (m["values"], bool(m["repeat"])) for m in option.finditer(synopsis)}
    declared = {
        flag.name: (_shown_values(field, flag), flag.repeatable) for _, field, flag in run_options()
    }
    assert found == declared


def _subparser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


@pytest.mark.parametrize("command", ["run", "serve", "demo"])
def test_every_declared_option_is_on_the_command(command):
    actions = {a.dest: a for a in _subparser(command)._actions}
    for name, field, flag in run_options():
        action = actions[name]
        assert action.option_strings == [flag.name]
        assert action.help.startswith(field.description)
        if get_origin(field.annotation) is Literal:
            assert tuple(action.choices) == get_args(field.annotation)


def test_an_option_not_given_takes_the_declared_default(tmp_path):
    args = cli._parser().parse_args(["run", str(tmp_path)])
    given = {name for name, _, _ in run_options() if name in args}
    assert given == set()  # nothing from argparse: the defaults are RunParams' own
    params = cli._run_params(args, str(tmp_path))
    defaults = RunParams(source=str(tmp_path))
    assert params.model_dump(exclude={"lake"}) == defaults.model_dump(exclude={"lake"})


def test_given_options_reach_run_params(tmp_path):
    argv = ["run", str(tmp_path), "--batch-size", "3", "--decode", "pillow", "--rehash"]
    argv += ["--backbone", "xception", "--pillow-plugin", "a", "--pillow-plugin", "b:c"]
    argv += ["--vector-storage", "float32", "--runner", "ray=head:6379", "--weights", "random"]
    params = cli._run_params(cli._parser().parse_args(argv), str(tmp_path))
    assert (params.batch_size, params.decode, params.rehash) == (3, "pillow", True)
    assert params.backbones == ["xception"] and params.pillow_plugins == ["a", "b:c"]
    assert (params.vector_storage, params.runner) == ("float32", "ray=head:6379")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--shard-size", "0"], "--shard-size must be at least 1"),
        (["--part-rows", "0"], "--part-rows must be at least 1"),
        (["--max-pixels", "0"], "--max-pixels must be at least 1"),
        (["--workers", "-2"], "--workers must be at least -1"),
        (["--decode-timeout", "0"], "--decode-timeout must be more than 0"),
        (["--runner", "spark"], "--runner 'spark': expected local, ray or ray=ADDRESS"),
        (["--device", "tpu"], "--device 'tpu': expected auto, cpu or cuda[:N]"),
    ],
)
@pytest.mark.parametrize("command", ["run", "serve"])
def test_a_refused_value_is_one_line_and_exit_2(
    command, options, message, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(cli, "_configure_prefect", lambda debug: None)
    when = ["--interval", "60"] if command == "serve" else []
    argv = [command, str(tmp_path), "--weights", "random", *when, *options]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == f"embedlake: error: {message}\n"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["reindex", "--device", "tpu"], "--device 'tpu': expected auto, cpu or cuda[:N]"),
        (["reindex", "--runner", "spark"], "--runner 'spark': expected local, ray or ray=ADDRESS"),
        (["similar", "q.jpg", "--k", "0"], "--k must be at least 1"),
        (["nearest", "abc", "--backbone", "xception", "--k", "0"], "--k must be at least 1"),
    ],
)
def test_other_commands_refuse_alike(options, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_configure_prefect", lambda debug: None)
    assert cli.main([*options, "--lake", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err == f"embedlake: error: {message}\n"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("decode", "gpu", "--decode 'gpu': expected auto, pillow or device"),
        ("compile", "yes", "--compile 'yes': expected auto, on or off"),
        ("precision", "fp8", "--precision 'fp8': expected auto, fp32, bf16 or fp16"),
        ("vector_storage", "int8", "--vector-storage 'int8': expected float16 or float32"),
    ],
)
def test_values_outside_the_declared_ones_are_refused_where_argparse_is_not_asked(
    name, value, message
):
    # a Prefect deployment's parameters reach RunParams without argparse's choices
    with pytest.raises(ValidationError) as refused:
        RunParams(source=".", **{name: value})
    assert explain(refused.value) == message
    with pytest.raises(ValidationError):
        check_option(name, value)


def test_the_deployment_takes_run_params():
    from prefect.utilities.callables import parameter_schema

    from embedlake.flows.pipeline import embed_collection

    schema = parameter_schema(embed_collection.fn).model_dump()
    assert schema["definitions"]["RunParams"] == RunParams.model_json_schema()
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    for deployment in deployments:
        RunParams(**deployment["parameters"]["params"])  # every name a field, every value valid
