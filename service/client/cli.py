"""`lingudistill submit`, `jobs` and `sweep` (entry points in pyproject): the CI face of the API.

stdout carries only what a script captures (the job id from submit; JSON or tables from jobs); progress, events
and messages go to stderr. Exit codes are the contract CI gates on: see EXIT_CODES_HELP.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from lingudistill.spec import (
    JobSpec,
    SpecError,
    is_local_uri,
    local_input_problems,
    local_path,
    parse_spec_text,
    read_spec,
    read_spec_text,
)
from service.client.bundling import self_contained
from service.client.ci_env import ci_idempotency_key
from service.client.client import LinguDistillClient, file_sha256, job_body, path_inside
from service.client.models import ApiConnectionError, ApiError, LinguDistillError, Report
from service.datasets.schemas import DatasetOut
from service.jobs.schemas import EventOut, JobOut
from service.lifecycle import JobStatus
from service.sweeps.schemas import SweepOut

EXIT_PASSED, EXIT_GATE_FAILED, EXIT_JOB_FAILED, EXIT_ERROR = 0, 1, 2, 3
EXIT_CODES_HELP = """\b
Exit codes:
  0  the job succeeded and every gate passed
  1  the job succeeded but a quality gate failed
  2  the job failed or was cancelled
  3  usage, auth or connection error (no verdict)"""
F = TypeVar("F", bound=Callable[..., Any])


def err(message: str, **style: Any) -> None:
    click.secho(message, err=True, **style)


# --- exit code 3 for every usage error (click's own is 2, which here means "the job failed") ------------------------
class _UsageExit3:
    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)  # type: ignore[misc]
        except click.UsageError as exc:
            exc.exit_code = EXIT_ERROR
            raise


class CiCommand(_UsageExit3, click.Command):
    pass


class CiGroup(_UsageExit3, click.Group):
    command_class = CiCommand

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            exc.exit_code = EXIT_ERROR
            raise


def exits_3_on_errors(function: F) -> F:
    """API, connection, spec and file errors: a message on stderr and exit code 3."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except click.UsageError as exc:
            exc.exit_code = EXIT_ERROR
            raise
        except ApiError as exc:
            hint = " (check --api-key / LINGUDISTILL_API_KEY)" if exc.status in (401, 403) else ""
            err(f"error: {exc}{hint}", fg="red")
        except ApiConnectionError as exc:
            err(f"error: cannot reach the server: {exc}", fg="red")
        except ValidationError as exc:  # an answer of the server that this client cannot read
            err(f"error: unexpected response from the server: {exc}", fg="red")
        except WaitTimedOut as exc:
            err(f"error: {exc}", fg="yellow")
        except (LinguDistillError, SpecError, OSError) as exc:
            err(f"error: {exc}", fg="red")
        sys.exit(EXIT_ERROR)

    return wrapper  # type: ignore[return-value]


def connection_options(function: F) -> F:
    function = click.option(
        "--api-key", envvar="LINGUDISTILL_API_KEY", show_envvar=True, help="API key (Bearer token)."
    )(function)
    return click.option(
        "--server",
        envvar="LINGUDISTILL_URL",
        show_envvar=True,
        default="http://127.0.0.1:8000",
        show_default=True,
        help="API base URL.",
    )(function)


def verdict_options(function: F) -> F:
    options = [
        click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write the report Markdown."),
        click.option(
            "--junit", "junit_path", type=click.Path(dir_okay=False), help="Write JUnit XML, a test per gate."
        ),
        click.option("--download", "download_dir", type=click.Path(file_okay=False), help="Fetch the repaired model."),
        click.option("--poll-interval", default=5.0, show_default=True, help="Seconds between status polls."),
        click.option("--timeout", "timeout_s", type=float, help="Give up waiting after this many seconds (exit 3)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


NO_KEY_HELP = (
    "no API key: pass --api-key or set LINGUDISTILL_API_KEY. An operator creates one on the server's host with "
    "`lingudistill keys create --tenant NAME` (the key is the last line it prints; it is shown only once)"
)


def make_client(server: str, api_key: str | None) -> LinguDistillClient:
    if not api_key:
        raise LinguDistillError(NO_KEY_HELP)
    return LinguDistillClient(server, api_key)


# --- submit ------------------------------------------------------------------------------------------------------
@click.command(cls=CiCommand, epilog=EXIT_CODES_HELP)
@click.argument("spec_path", metavar="SPEC", type=click.Path(exists=True, dir_okay=False))
@click.option("--wait", is_flag=True, help="Wait for the verdict, with a progress bar (plain lines when not a TTY).")
@click.option("--follow", is_flag=True, help="Stream the job's events until it ends (implies --wait).")
@click.option(
    "--idempotency-key",
    help="Submitting again with the same key (and spec) returns the first job instead of a new one. Default in "
    "CI (GitHub Actions, GitLab CI, Buildkite, CircleCI, Azure Pipelines, Jenkins): derived from the CI run and "
    "job, so a retried step creates no second job; elsewhere a new key per submit.",
)
@verdict_options
@connection_options
@exits_3_on_errors
def submit(
    spec_path: str,
    wait: bool,
    follow: bool,
    idempotency_key: str | None,
    report_path: str | None,
    junit_path: str | None,
    download_dir: str | None,
    poll_interval: float,
    timeout_s: float | None,
    server: str,
    api_key: str | None,
) -> None:
    """Submit the job in SPEC (YAML or JSON) and, with --wait, exit with its verdict.

    Local files the spec names as mixture sources or evaluation suites are uploaded as datasets first (skipped
    when the tenant already has a dataset with the same sha256) and named as dataset://ID. The job id is printed
    on stdout; everything else goes to stderr. --report, --junit and --download imply --wait.
    """
    spec = read_spec(spec_path)
    with make_client(server, api_key) as api:
        check_local_inputs(spec, api.base_url)  # before any upload: a typo in a model path costs nothing
        spec = upload_local_files(api, spec)
        job = submit_once(api, spec, idempotency_key)
        click.echo(job.id)
        if not (wait or follow or report_path or junit_path or download_dir):
            return
        job = follow_job(api, job.id) if follow else wait_for(api, job.id, poll_interval, timeout_s)
        sys.exit(conclude(api, job, report_path, junit_path, download_dir))


def check_local_inputs(spec: JobSpec, server: str) -> None:
    """Local data files must exist here (they are uploaded from here). Local model folders are read by the server:
    they are checked only when it runs on this machine, where a path missing here is missing there too."""
    problems = local_input_problems(spec)
    if not _on_this_machine(server):
        problems = [p for p in problems if not p.startswith(("student:", "teacher:"))]
    if problems:
        raise LinguDistillError("the spec names what does not exist:\n  " + "\n  ".join(problems))


def _on_this_machine(server: str) -> bool:
    from urllib.parse import urlparse

    return urlparse(server).hostname in ("127.0.0.1", "localhost", "::1")


def submit_once(api: LinguDistillClient, spec: JobSpec, idempotency_key: str | None) -> JobOut:
    """POST the job with an Idempotency-Key: the one given, else one derived from the CI run, else a new one."""
    ci = ci_idempotency_key(job_body(spec)) if idempotency_key is None else None
    submission = api.submit_job(spec, idempotency_key=idempotency_key or (ci.key if ci else None))
    job = submission.job
    if submission.replayed:
        err(f"{job.id} ({job.name}) was already submitted with this idempotency key; following it, not a new job")
    else:
        err(f"submitted {job.id} ({job.name}) to {api.base_url}")
    if ci is not None:
        err(f"idempotency key {ci.key} ({ci.system}: {', '.join(ci.variables)}): a retry of this step reuses the job")
    return job


def upload_local_files(api: LinguDistillClient, spec: JobSpec) -> JobSpec:
    """Each local file in the mixture and the evaluation suites, uploaded once per content hash, as dataset://ID.
    Student and teacher folders stay paths: the server's URI policy decides about them."""
    known: dict[str, DatasetOut] | None = None
    uploaded: dict[Path, str] = {}

    def as_dataset(uri: str, what: str, kind: str) -> str:
        nonlocal known
        if not is_local_uri(uri):
            return uri
        path = local_path(uri).resolve()
        if path.is_dir():
            return uri
        if not path.is_file():
            raise LinguDistillError(f"{what}: {path} does not exist")
        if path not in uploaded:
            if known is None:
                known = {d.sha256: d for d in reversed(list(api.iter_datasets()))}  # newest wins
            uploaded[path] = _upload_once(api, path, known, what, kind).uri
        return uploaded[path]

    data = [f for f in spec.uri_fields() if f.role in ("training", "evaluation")]
    return spec.with_uris({f.path: as_dataset(f.uri, f.label, f.role) for f in data})


def _upload_once(api: LinguDistillClient, path: Path, known: dict[str, DatasetOut], what: str, kind: str) -> DatasetOut:
    bundle = self_contained(path)  # local images inlined: the uploaded file must stand on its own
    try:
        sha = file_sha256(bundle)
        dataset = known.get(sha)
        if dataset is not None and dataset.kind == kind:
            err(f"{what}: {path.name} already uploaded as {dataset.uri} (same sha256)")
        else:
            dataset = known[sha] = api.upload_dataset(bundle, name=path.name, kind=kind)
            err(f"{what}: uploaded {path.name} as {dataset.uri} ({dataset.record_count} records)")
    finally:
        if bundle != path:
            bundle.unlink(missing_ok=True)
    if dataset.status != "ready":
        problems = "\n".join(f"  {p.origin}: {p.message}" for p in dataset.problems[:10])
        raise LinguDistillError(f"{what}: {path} has invalid records:\n{problems}")
    return dataset


# --- waiting -------------------------------------------------------------------------------------------------------
class WaitTimedOut(LinguDistillError):
    """--timeout ran out while the job still runs: no verdict (exit 3), and the job is left running."""

    def __init__(self, job_id: str, timeout_s: float) -> None:
        super().__init__(
            f"timed out after {timeout_s:g} s waiting for job {job_id}, which keeps running; "
            f"`lingudistill jobs wait {job_id}` waits for it again (same exit codes)"
        )


class SmoothedEta:
    """Seconds left, from an exponential moving average of the steps per second seen between polls: one slow or
    fast step moves it a little (the server's own ETA follows the last step alone, and swings)."""

    def __init__(self, weight: float = 0.3, clock: Callable[[], float] = time.monotonic) -> None:
        self.weight, self.clock = weight, clock
        self.rate: float | None = None  # steps per second
        self.seen: tuple[int, float] | None = None  # the last step that changed, and when it was seen

    def __call__(self, step: int | None, total: int | None) -> float | None:
        if step is None or not total:
            return None
        now = self.clock()
        if self.seen is None or step < self.seen[0]:
            self.seen = (step, now)  # first poll, or a retry that resumed from an earlier checkpoint
        elif step > self.seen[0] and now > self.seen[1]:
            rate = (step - self.seen[0]) / (now - self.seen[1])
            self.rate = rate if self.rate is None else self.weight * rate + (1 - self.weight) * self.rate
            self.seen = (step, now)
        return max(total - step, 0) / self.rate if self.rate else None


class ProgressView:
    """A rich progress bar (step, loss, ETA) on a terminal; a plain line per status change or `every_s` in logs."""

    def __init__(self, job_id: str, tty: bool | None = None, every_s: float = 30.0) -> None:
        self.job_id, self.every_s = job_id, every_s
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.eta = SmoothedEta()
        self.last_line = 0.0
        self.last_status: JobStatus | None = None
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> ProgressView:
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            columns = [
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  ETA {task.fields[eta]}"),
            ]
            self.bar = Progress(*columns, console=Console(stderr=True), transient=False)
            self.bar.start()
            self.task = self.bar.add_task(self.job_id, total=None, loss="-", eta="-")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, job: JobOut) -> None:
        progress = job.progress
        loss = _loss(job)
        seconds = self.eta(progress.step, progress.total_steps) if job.status is JobStatus.running else None
        seconds = seconds if seconds is not None else progress.eta_s
        eta = _duration(seconds) if seconds is not None else "-"
        if self.bar is not None:
            description = f"{job.id} {job.status.value}"
            self.bar.update(
                self.task, description=description, completed=progress.step or 0, total=progress.total_steps, loss=loss
            )
            self.bar.update(self.task, eta=eta)
            return
        now = time.monotonic()
        if job.status == self.last_status and now - self.last_line < self.every_s:
            return
        self.last_status, self.last_line = job.status, now
        line = f"{job.id} {job.status.value}"
        if progress.step is not None:
            line += f" step {progress.step}/{progress.total_steps or '?'}"
            line += f" ({progress.percent:.1f}%)" if progress.percent is not None else ""
            line += f" loss {loss} ETA {eta}"
        if job.queue_info is not None:
            line += f" - {job.queue_info.reason}"
        if job.status is JobStatus.paused:
            line += f" - still waiting: `lingudistill jobs resume {job.id}` continues it"
        err(line)


def _loss(job: JobOut) -> str:
    value = (job.progress.latest_metrics or {}).get("loss")
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def wait_for(api: LinguDistillClient, job_id: str, poll_interval: float, timeout_s: float | None) -> JobOut:
    with ProgressView(job_id) as view:
        try:
            return api.wait(job_id, on_progress=view, poll_interval_s=poll_interval, timeout_s=timeout_s)
        except TimeoutError:
            raise WaitTimedOut(job_id, timeout_s or 0) from None


def follow_job(api: LinguDistillClient, job_id: str, out: Callable[[str], None] = err) -> JobOut:
    for event in api.stream_events(job_id):
        out(format_event(event))
    return api.get_job(job_id)


def format_event(event: EventOut) -> str:
    return f"{event.created_at:%H:%M:%S} #{event.id} {event.type} {json.dumps(event.data, separators=(',', ':'))}"


# --- the verdict -----------------------------------------------------------------------------------------------
def conclude(
    api: LinguDistillClient,
    job: JobOut,
    report_path: str | None,
    junit_path: str | None,
    download_dir: str | None,
) -> int:
    """Print the verdict, write the requested files, and return the exit code."""
    report = fetch_report(api, job) if job.status is JobStatus.succeeded else None
    code = verdict_code(job, report)
    print_verdict(job, report, code)
    if report_path:
        write_report(api, job, report, Path(report_path))
        err(f"report: {report_path}")
    if junit_path:
        Path(junit_path).write_bytes(junit_xml(job, report))
        err(f"junit: {junit_path}")
    if download_dir and job.status is JobStatus.succeeded:
        api.download_model(job.id, Path(download_dir))
        err(f"downloaded the repaired model to {download_dir} (sha256 verified)")
    return code


def fetch_report(api: LinguDistillClient, job: JobOut) -> Report | None:
    try:
        return api.get_report(job.id)
    except ApiError as exc:
        if exc.code == "report_not_ready":
            return None
        raise


def verdict_code(job: JobOut, report: Report | None) -> int:
    if job.status is not JobStatus.succeeded:
        return EXIT_JOB_FAILED
    return EXIT_PASSED if report is None or report.passed else EXIT_GATE_FAILED


def print_verdict(job: JobOut, report: Report | None, code: int) -> None:
    if job.status is not JobStatus.succeeded:
        reason = f": {job.failure_reason.value}" if job.failure_reason else ""
        err(f"job {job.id} {job.status.value}{reason}" + (f" - {job.failure_message}" if job.failure_message else ""))
    elif report is None:
        err(f"job {job.id} succeeded; it has no report (no evaluation configured), so no gates")
    lift = (report.model_extra or {}).get("lift") if report else None
    if lift:  # evaluation.control: the job against its control arm
        mean = lift["mean_recovery"]
        interval = f"{_num(mean['low'])} to {_num(mean['high'])}"
        err(f"  lift over the control {job.control_job_id}: mean recovery {_num(mean['estimate'])} (95% {interval})")
    for gate in report.gates if report else []:
        result = "pass" if gate.passed else "FAIL"
        err(f"  gate {gate.name}: {result} (value {_num(gate.value)}, threshold {_num(gate.threshold)})")
    verdict = {EXIT_PASSED: "PASSED", EXIT_GATE_FAILED: "FAILED (gate)", EXIT_JOB_FAILED: "FAILED (job)"}[code]
    err(f"verdict: {verdict}", fg="green" if code == EXIT_PASSED else "red", bold=True)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def write_report(api: LinguDistillClient, job: JobOut, report: Report | None, path: Path) -> None:
    """report.md, with the plots it links written beside it so that it displays as it does in the UI."""
    markdown = report_markdown(api, job, report)
    path.write_text(markdown, encoding="utf-8")
    for name in linked_files(markdown):
        try:
            content = api.get_report_file(job.id, name)
        except ApiError:
            err(f"warning: the report links {name}, which the server does not have", fg="yellow")
            continue
        path_inside(path.parent, name).write_bytes(content)


def linked_files(markdown: str) -> list[str]:
    """The relative files a Markdown report embeds as images (its plots)."""
    names = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", markdown)
    return [name for name in dict.fromkeys(names) if "://" not in name and not name.startswith(("/", "data:"))]


def report_markdown(api: LinguDistillClient, job: JobOut, report: Report | None) -> str:
    """The worker's rendered report.md when stored; else rendered here from the JSON; else a status note."""
    if report is None:
        note = f"Job `{job.id}` ended **{job.status.value}**"
        note += f" ({job.failure_reason.value}): {job.failure_message}" if job.failure_reason else ""
        return f"# Recovery report: {job.name}\n\n{note}. No recovery report was produced.\n"
    try:
        return api.get_report_file(job.id, "report.md").decode("utf-8")
    except ApiError:
        from lingudistill.evaluation.report import render_markdown  # imports torch: only when needed

        return render_markdown(report.raw, [])


def junit_xml(job: JobOut, report: Report | None) -> bytes:
    """One testcase per gate (a failed gate is a <failure>); a job that did not succeed is one failed testcase."""
    suite = ET.Element("testsuite", name=f"lingudistill.{job.name}", timestamp=job.created_at.isoformat())
    properties = ET.SubElement(suite, "properties")
    for name, value in (("job_id", job.id), ("status", job.status.value), ("attempt", str(job.attempt))):
        ET.SubElement(properties, "property", name=name, value=value)
    classname = f"lingudistill.gates.{job.name}"
    if job.status is not JobStatus.succeeded:
        case = ET.SubElement(suite, "testcase", classname=f"lingudistill.job.{job.name}", name="job", time="0")
        message = f"job {job.status.value}: {job.failure_reason.value if job.failure_reason else ''}"
        ET.SubElement(case, "failure", message=message, type=job.status.value).text = job.failure_message or ""
    elif report is None or not report.gates:
        ET.SubElement(suite, "testcase", classname=classname, name="no gates configured", time="0")
    else:
        for gate in report.gates:
            case = ET.SubElement(suite, "testcase", classname=classname, name=gate.name, time="0")
            if not gate.passed:
                message = f"{gate.name}: value {_num(gate.value)} vs threshold {_num(gate.threshold)}"
                ET.SubElement(case, "failure", message=message, type="gate").text = gate.note or ""
    return junit_document(suite)


def junit_document(suite: ET.Element) -> bytes:
    """The <testsuites> document around `suite`, with its counts."""
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", "0")
    suite.set("skipped", "0")
    root = ET.Element("testsuites", name="lingudistill", tests=suite.get("tests", "0"))
    root.set("failures", suite.get("failures", "0"))
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def download_latest(
    api: LinguDistillClient, job_id: str, dest: Path, model_only: bool, step: int | None = None
) -> None:
    steps = sorted(c.step for c in api.list_checkpoints(job_id).items)
    if not steps:
        raise LinguDistillError(
            f"job {job_id} has no complete checkpoint (yet); a finished job's model is downloaded without "
            f"--checkpoint: `lingudistill jobs download {job_id} DEST`"
        )
    if step is not None and step not in steps:
        raise LinguDistillError(f"job {job_id} has no complete checkpoint at step {step}; it has steps {steps}")
    chosen = step if step is not None else steps[-1]
    api.download_checkpoint(job_id, dest, step=chosen, model_only=model_only)
    what = "model files" if model_only else "checkpoint"
    err(f"downloaded the {what} of step {chosen} to {dest} (sha256 verified)")


# --- jobs ----------------------------------------------------------------------------------------------------------
@click.group(cls=CiGroup, epilog=EXIT_CODES_HELP)
def jobs() -> None:
    """List, inspect, cancel, retry, pause, resume, follow, wait for and download jobs."""


@jobs.command("list")
@click.option("--status", "statuses", multiple=True, type=click.Choice([s.value for s in JobStatus]))
@click.option("--name", help="Only jobs with this name.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 200))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@connection_options
@exits_3_on_errors
def jobs_list(
    statuses: tuple[str, ...], name: str | None, limit: int, as_json: bool, server: str, api_key: str | None
) -> None:
    """The newest jobs."""
    with make_client(server, api_key) as api:
        page = api.list_jobs(limit=limit, status=statuses, name=name)
    for job in page.items:
        if as_json:
            click.echo(job.model_dump_json())
            continue
        step = f"{job.progress.step or 0}/{job.progress.total_steps or '?'}"
        click.echo(f"{job.id}  {job.status.value:<10}  {step:>11}  {job.created_at:%Y-%m-%d %H:%M}  {job.name}")


@jobs.command("get")
@click.argument("job_id")
@connection_options
@exits_3_on_errors
def jobs_get(job_id: str, server: str, api_key: str | None) -> None:
    """The job, with its progress, as JSON."""
    with make_client(server, api_key) as api:
        click.echo(api.get_job(job_id).model_dump_json(indent=2))


@jobs.command("cancel")
@click.argument("job_id")
@connection_options
@exits_3_on_errors
def jobs_cancel(job_id: str, server: str, api_key: str | None) -> None:
    """Cancel: a queued job at once, a running one at its worker's next heartbeat."""
    with make_client(server, api_key) as api:
        click.echo(f"{job_id} {api.cancel_job(job_id).status.value}")


@jobs.command("retry")
@click.argument("job_id")
@connection_options
@exits_3_on_errors
def jobs_retry(job_id: str, server: str, api_key: str | None) -> None:
    """Retry a failed or cancelled job from its last complete checkpoint."""
    with make_client(server, api_key) as api:
        click.echo(f"{job_id} {api.retry_job(job_id).status.value}")


@jobs.command("pause")
@click.argument("job_id")
@connection_options
@exits_3_on_errors
def jobs_pause(job_id: str, server: str, api_key: str | None) -> None:
    """Pause at a checkpoint and free the GPU: a queued job at once, a running one once its worker saved a
    checkpoint at the next step (pausing, then paused). Exit 0 with the status; 3 when the job cannot be paused
    (evaluating or finished) or is not found."""
    with make_client(server, api_key) as api:
        click.echo(f"{job_id} {api.pause_job(job_id).status.value}")


@jobs.command("resume")
@click.argument("job_id")
@connection_options
@exits_3_on_errors
def jobs_resume(job_id: str, server: str, api_key: str | None) -> None:
    """Queue a paused job again, to continue from its pause's checkpoint. Exit 0 with the status; 3 when the job
    is not paused or is not found."""
    with make_client(server, api_key) as api:
        click.echo(f"{job_id} {api.resume_job(job_id).status.value}")


@jobs.command("events")
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Stream live until the job ends (reconnects on its own).")
@click.option("--after", type=int, help="Only events after this event id.")
@connection_options
@exits_3_on_errors
def jobs_events(job_id: str, follow: bool, after: int | None, server: str, api_key: str | None) -> None:
    """The job's event log, one line per event."""
    with make_client(server, api_key) as api:
        events = api.stream_events(job_id, after=after) if follow else api.iter_events(job_id, after=after)
        for event in events:
            click.echo(format_event(event))


@jobs.command("wait", epilog=EXIT_CODES_HELP)
@click.argument("job_id")
@verdict_options
@connection_options
@exits_3_on_errors
def jobs_wait(
    job_id: str,
    report_path: str | None,
    junit_path: str | None,
    download_dir: str | None,
    poll_interval: float,
    timeout_s: float | None,
    server: str,
    api_key: str | None,
) -> None:
    """Wait for a submitted job and exit with its verdict (like submit --wait)."""
    with make_client(server, api_key) as api:
        job = wait_for(api, job_id, poll_interval, timeout_s)
        sys.exit(conclude(api, job, report_path, junit_path, download_dir))


@jobs.command("download")
@click.argument("job_id")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--checkpoint", is_flag=True, help="The newest complete checkpoint instead of the final model.")
@click.option("--step", type=int, help="The checkpoint of this step instead of the final model.")
@click.option("--model-only", is_flag=True, help="With a checkpoint: only the student's files, not optimiser state.")
@connection_options
@exits_3_on_errors
def jobs_download(
    job_id: str, dest: str, checkpoint: bool, step: int | None, model_only: bool, server: str, api_key: str | None
) -> None:
    """Download the repaired model (or a checkpoint), every file checked against its sha256 manifest."""
    with make_client(server, api_key) as api:
        if checkpoint or step is not None:
            download_latest(api, job_id, Path(dest), model_only, step)
        else:
            api.download_model(job_id, Path(dest))
            err(f"downloaded the repaired model of job {job_id} to {dest} (sha256 verified)")


# --- sweeps --------------------------------------------------------------------------------------------------------
SWEEP_EXIT_CODES_HELP = """\b
Exit codes (as submit's, for the sweep's best arm):
  0  the sweep chose a best arm and every gate of it passed (min_lift counted on its lift over the control)
  1  the sweep chose a best arm but one of its gates failed
  2  no arm succeeded, the sweep was cancelled, or its control arm failed
  3  usage, auth or connection error, or --timeout ran out (no verdict)"""


@click.group(cls=CiGroup, epilog=SWEEP_EXIT_CODES_HELP)
def sweep() -> None:
    """Submit a sweep (a grid of arms over one base spec, each an ordinary job) and follow it."""


@sweep.command("submit", epilog=SWEEP_EXIT_CODES_HELP)
@click.argument("sweep_path", metavar="FILE", type=click.Path(exists=True, dir_okay=False))
@click.option("--wait", is_flag=True, help="Wait until every arm has ended and exit with the best arm's verdict.")
@click.option(
    "--idempotency-key",
    help="Submitting again with the same key (and file) returns the first sweep; default in CI: derived from the "
    "CI run and job, as for submit.",
)
@click.option(
    "--junit", "junit_path", type=click.Path(dir_okay=False), help="Write JUnit XML: a test per arm and per gate."
)
@click.option("--download", "download_dir", type=click.Path(file_okay=False), help="Fetch the best arm's model.")
@click.option("--poll-interval", default=5.0, show_default=True, help="Seconds between status polls.")
@click.option("--timeout", "timeout_s", type=float, help="Give up waiting after this many seconds (exit 3).")
@connection_options
@exits_3_on_errors
def sweep_submit(
    sweep_path: str,
    wait: bool,
    idempotency_key: str | None,
    junit_path: str | None,
    download_dir: str | None,
    poll_interval: float,
    timeout_s: float | None,
    server: str,
    api_key: str | None,
) -> None:
    """Submit the sweep in FILE (YAML or JSON: base, grid, and optionally name, sampling, control, select) and,
    with --wait, exit with the verdict of its best arm.

    `base` is a job spec inline, or the path of a spec file (relative to FILE). Local data files are uploaded as
    for submit. The sweep id is printed on stdout. --junit and --download imply --wait.
    """
    body = read_sweep_file(Path(sweep_path))
    with make_client(server, api_key) as api:
        base = JobSpec.model_validate(body["base"])
        check_local_inputs(base, api.base_url)
        body["base"] = job_body(upload_local_files(api, base))
        ci = ci_idempotency_key(body) if idempotency_key is None else None
        submission = api.submit_sweep(body, idempotency_key=idempotency_key or (ci.key if ci else None))
        result = submission.sweep
        replayed = " (already submitted with this idempotency key)" if submission.replayed else ""
        err(f"submitted sweep {result.id} ({result.name}, {len(result.arms)} arms){replayed} to {api.base_url}")
        click.echo(result.id)
        if not (wait or junit_path or download_dir):
            return
        result = wait_for_sweep(api, result.id, poll_interval, timeout_s)
        sys.exit(conclude_sweep(api, result, junit_path, download_dir))


def read_sweep_file(path: Path) -> dict[str, Any]:
    """The sweep request in `path`, its base spec inline or read from the file it names, relative local URIs made
    absolute against their file's folder (as for a spec)."""
    data = parse_spec_text(read_spec_text(path), str(path))
    if "base" not in data:
        raise SpecError(f"{path}: a sweep file needs a `base` spec (inline, or the path of a spec file)")
    if isinstance(data["base"], str):
        base = read_spec(path.parent / data["base"])
    else:
        spec = JobSpec.model_validate(data["base"])
        folder = path.parent.resolve()
        base = spec.with_uris(
            {f.path: str(local_path(f.uri, folder)) for f in spec.uri_fields() if is_local_uri(f.uri)}
        )
    return {**data, "base": job_body(base)}


def wait_for_sweep(api: LinguDistillClient, sweep_id: str, poll_interval: float, timeout_s: float | None) -> SweepOut:
    seen: dict[str, str] = {}

    def show(current: SweepOut) -> None:
        for arm in current.arms:
            if seen.get(arm.job_id) != arm.status.value:
                seen[arm.job_id] = arm.status.value
                step = f" step {arm.progress.step}/{arm.progress.total_steps}" if arm.progress.step else ""
                err(f"{current.id} arm {arm.label} ({arm.job_id}): {arm.status.value}{step}")

    try:
        return api.wait_sweep(sweep_id, on_progress=show, poll_interval_s=poll_interval, timeout_s=timeout_s)
    except TimeoutError:
        raise LinguDistillError(
            f"timed out after {timeout_s:g} s waiting for sweep {sweep_id}, whose arms keep running; "
            f"`lingudistill sweep status {sweep_id}` shows it"
        ) from None


def sweep_verdict_code(result: SweepOut) -> int:
    control = next((arm for arm in result.arms if arm.is_control), None)
    if result.status != "succeeded" or (control is not None and control.status is not JobStatus.succeeded):
        return EXIT_JOB_FAILED
    return EXIT_PASSED if result.passed is not False else EXIT_GATE_FAILED


def conclude_sweep(api: LinguDistillClient, result: SweepOut, junit_path: str | None, download_dir: str | None) -> int:
    code = sweep_verdict_code(result)
    metrics = {arm.job_id: arm.metric for arm in result.arms}
    for arm in result.arms:
        mark = " <- best" if arm.job_id == result.best_job_id else (" (control)" if arm.is_control else "")
        err(f"  {arm.label}: {arm.status.value}, {result.select.metric} {_num(metrics[arm.job_id])}{mark}")
    if result.lift is not None and result.lift.error:
        err(f"  lift over the control: n/a ({result.lift.error})")
    elif result.lift is not None:
        intervals = [result.lift.mean_recovery] if result.lift.mean_recovery else []
        for row in intervals + result.lift.suites:
            interval = f"[{_num(row.low)}, {_num(row.high)}]" if row.low is not None else f"n/a ({row.note})"
            err(f"  lift over the control, {row.name}: {_num(row.estimate)} {interval}")
    for gate in result.gates or []:
        err(
            f"  gate {gate.name}: {'pass' if gate.passed else 'FAIL'} (value {_num(gate.value)}, "
            f"threshold {_num(gate.threshold)})"
        )
    verdict = {EXIT_PASSED: "PASSED", EXIT_GATE_FAILED: "FAILED (gate)", EXIT_JOB_FAILED: "FAILED (job)"}[code]
    err(
        f"sweep {result.id} {result.status}; best arm: {result.best_arm or 'none'}; verdict: {verdict}",
        fg="green" if code == EXIT_PASSED else "red",
        bold=True,
    )
    if junit_path:
        Path(junit_path).write_bytes(sweep_junit_xml(result))
        err(f"junit: {junit_path}")
    if download_dir and result.best_job_id:
        api.download_model(result.best_job_id, Path(download_dir))
        err(f"downloaded the best arm's model ({result.best_job_id}) to {download_dir} (sha256 verified)")
    return code


def sweep_junit_xml(result: SweepOut) -> bytes:
    """One testcase per arm (an arm that did not succeed is a <failure>) and one per gate of the best arm."""
    suite = ET.Element("testsuite", name=f"lingudistill.sweep.{result.name}", timestamp=result.created_at.isoformat())
    properties = ET.SubElement(suite, "properties")
    for name, value in (("sweep_id", result.id), ("status", result.status), ("best_arm", result.best_arm or "")):
        ET.SubElement(properties, "property", name=name, value=value)
    for arm in result.arms:
        case = ET.SubElement(suite, "testcase", classname=f"lingudistill.sweep.{result.name}.arms", name=arm.label)
        case.set("time", "0")
        if arm.status is not JobStatus.succeeded:
            reason = arm.failure_reason.value if arm.failure_reason else ""
            ET.SubElement(case, "failure", message=f"arm {arm.status.value}: {reason}", type=arm.status.value)
    for gate in result.gates or []:
        case = ET.SubElement(suite, "testcase", classname=f"lingudistill.sweep.{result.name}.gates", name=gate.name)
        case.set("time", "0")
        if not gate.passed:
            message = f"{gate.name}: value {_num(gate.value)} vs threshold {_num(gate.threshold)}"
            ET.SubElement(case, "failure", message=message, type="gate").text = gate.note or ""
    return junit_document(suite)


@sweep.command("status")
@click.argument("sweep_id")
@connection_options
@exits_3_on_errors
def sweep_status(sweep_id: str, server: str, api_key: str | None) -> None:
    """The sweep, with its arms, best arm and lift, as JSON."""
    with make_client(server, api_key) as api:
        click.echo(api.get_sweep(sweep_id).model_dump_json(indent=2))


@sweep.command("cancel")
@click.argument("sweep_id")
@connection_options
@exits_3_on_errors
def sweep_cancel(sweep_id: str, server: str, api_key: str | None) -> None:
    """Cancel every arm of the sweep that has not finished."""
    with make_client(server, api_key) as api:
        click.echo(f"{sweep_id} {api.cancel_sweep(sweep_id).status}")
