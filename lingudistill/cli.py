"""The `lingudistill` command.

The engine's own commands live here (train, validate, compare, toy). The service and the worker add theirs (serve,
db, keys, worker, submit, jobs) through the `lingudistill.commands` entry-point group, so this package never
imports them.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, NoReturn

import click

from lingudistill.errors import is_user_error
from lingudistill.spec import JobSpec, SpecError, local_input_problems, read_spec

# transformers and torch are imported inside the commands that need them: `lingudistill submit --help` and the
# service's commands must start in a blink, not after loading a deep-learning stack. `train` and `validate` read
# and check the spec (and that its local files exist) first, so a typo is answered before torch is imported.

EXIT_CODES_HELP = """\b
Exit codes:
  0  done (validate: the spec, its models and its data are valid)
  1  an unexpected error (the traceback says where)
  2  invalid input: the spec, its models or data, or the command line"""


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


@click.group(
    cls=PluginGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog=EXIT_CODES_HELP + "\n\nsubmit and jobs have their own (see their --help).",
)
@click.version_option(package_name="lingudistill")
def main() -> None:
    """LinguDistill: repair a vision-language model's language ability by distilling from its original LM."""


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bars say what is happening; per-shard bars are noise


def _load(spec_path: str) -> JobSpec:
    """The spec, with every local file it names present; else each problem on stderr and exit code 2."""
    try:
        spec = read_spec(spec_path)
    except SpecError as exc:
        _fail(exc)
    problems = local_input_problems(spec)
    if problems:
        _fail("\n  ".join([f"spec {spec_path} names what does not exist:", *problems]))
    return spec


def _fail(problem: Exception | str) -> NoReturn:
    """Every input error of every command: one `error:` prefix on stderr, exit code 2."""
    click.secho(f"error: {problem}", fg="red", err=True)
    sys.exit(2)


def _fail_if_user_error(exc: Exception) -> None:
    """The user's input is wrong (lingudistill.errors decides): _fail; anything else goes on with its traceback."""
    if is_user_error(exc):
        _fail(exc)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--resume", is_flag=True, help="Continue from the newest complete checkpoint in the output folder.")
def train(spec_path: str, output: str, resume: bool) -> None:
    """Run a recovery job: validate, score before, train, score after, report.

    Writes OUTPUT/metrics.jsonl (one JSON object per optimiser step), OUTPUT/model/ (the repaired student,
    loadable with from_pretrained), OUTPUT/checkpoints/, and OUTPUT/report.json + report.md when the spec
    has evaluation suites.
    """
    spec = _load(spec_path)
    from lingudistill.pipeline import resolve_seed, run_job

    _quiet_transformers()
    spec = resolve_seed(spec, Path(output), resume=resume)  # a resumed job keeps its recorded seed
    click.echo(f"job {spec.name}: seed {spec.seed}, {spec.training.max_steps} steps -> {output}")
    try:
        result = run_job(spec, Path(output), resume=resume, progress=True)
    except Exception as exc:
        _fail_if_user_error(exc)
        raise
    click.echo(f"model: {result.train.model_dir} ({result.train.parameter_count:,} parameters)")
    if result.report is not None:
        from lingudistill.evaluation import summary_lines

        for line in summary_lines(result.report):
            click.echo(line)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
def validate(spec_path: str) -> None:
    """Check the spec, the models (loading, compatibility) and every data record, without training."""
    spec = _load(spec_path)
    from lingudistill.pipeline import validate as validate_job

    _quiet_transformers()
    try:
        checked = validate_job(spec)
    except Exception as exc:
        _fail_if_user_error(exc)
        raise
    click.echo(json.dumps({"ok": True, "records": checked.data.counts}, indent=2))


@main.command(
    epilog="""\b
Exit codes:
  0  every gate of the method's spec passed, min_lift included
  1  a gate failed (or an unexpected error: the traceback says where)
  2  invalid input: not two finished runs, not a control, or not the same evaluation items"""
)
@click.argument("method_dir", metavar="METHOD_DIR", type=click.Path(file_okay=False, exists=True))
@click.argument("control_dir", metavar="CONTROL_DIR", type=click.Path(file_okay=False, exists=True))
@click.option("--output", "-o", type=click.Path(file_okay=False), help="Write the combined report here.")
@click.option("--resamples", default=2000, show_default=True, type=click.IntRange(min=1), help="Bootstrap resamples.")
def compare(method_dir: str, control_dir: str, output: str | None, resamples: int) -> None:
    """The lift of a method run over its control run (the same job with kd_sources: none), with a 95% interval.

    Both folders are outputs of `lingudistill train`. Prints the lift table and the gates; with --output, writes
    the combined report there (report.json with `control` and `lift`, report.md, eval_items.json, plots).
    """
    from lingudistill.evaluation import summary_lines, write_report
    from lingudistill.evaluation.compare import CompareError, compare_runs
    from lingudistill.evaluation.lift import ItemMismatch
    from lingudistill.evaluation.report import lift_lines

    try:
        report = compare_runs(Path(method_dir), Path(control_dir), n_resamples=resamples)
    except (CompareError, ItemMismatch) as exc:
        _fail(exc)
    for line in [*lift_lines(report)[3:], "", *summary_lines(report)]:  # the table, without its heading
        click.echo(line)
    if output is not None:
        write_report(report, Path(output), Path(method_dir) / "metrics.jsonl")
        click.echo(f"report: {Path(output) / 'report.md'}", err=True)
    sys.exit(0 if report["passed"] else 1)


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
    for line in _toy_next_steps(spec_path):
        click.echo(line, err=True)
    click.echo(str(spec_path))  # alone on the last line of stdout, for scripts


def _toy_next_steps(spec_path: Path) -> list[str]:
    output = spec_path.parent / "run"
    steps = [
        (f"lingudistill validate {spec_path}", "models, data and spec, without training"),
        (f"lingudistill train {spec_path} --output {output}", f"the job here; then {output}/report.md"),
        ("make demo", "the same job through the service and its web UI"),
    ]
    width = max(len(command) for command, _ in steps)
    return ["next steps:", *(f"  {command:<{width}}  # {why}" for command, why in steps)]


def _unavailable(name: str, exc: ImportError) -> click.Command:
    # every plugin command (serve, db, keys, worker, submit, jobs, sweep) ships in the service extra
    reason = f'{exc.name or exc} is not installed; install the service extra: pip install "lingudistill[service]"'
    context = {"ignore_unknown_options": True, "help_option_names": []}

    @click.command(name, help=f"(unavailable: {reason})", context_settings=context)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        click.secho(f"error: `lingudistill {name}` is unavailable: {reason}", fg="red", err=True)
        sys.exit(3 if name in ("submit", "jobs", "sweep") else 1)  # submit, jobs, sweep: 3 is "no verdict" to a CI gate

    return command


if __name__ == "__main__":
    main()
