"""MLflow runs of the steps: start a step's run, log to stderr, and find earlier runs (one search for all).

Every "which earlier run?" question of the project (the pipeline's run cache, a step run alone looking
for its input, register looking for the evaluation of a model, the tests) goes through `find_run`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from steps.workflow import config


class UpstreamNotFound(LookupError):
    """No finished run of the step a step needs its input from."""


class Killed(BaseException):
    """SIGTERM arrived: unwind (so temporary directories are removed) and end the run as KILLED."""


@contextlib.contextmanager
def start_step(step: str, params: Mapping[str, object]) -> Iterator[mlflow.ActiveRun]:
    """Start (or, under `mlflow run`, resume via MLFLOW_RUN_ID) the run of a step, tag and name it; end it.

    `mlflow run` has already logged the declared parameters; a direct `python -m steps.x` has not, so only
    the missing ones are logged (re-logging a param with another string value is an error). The run ends
    FINISHED, FAILED on an error, and KILLED on Ctrl-C or SIGTERM (never left RUNNING). The values are
    checked first (`params.check`, the same check `main` makes), so a bad one costs no work. The step works
    in one temporary directory of its own (`step_tempdir`), removed however it ends.
    """
    from steps.workflow.params import check

    check({step: params})
    _bound_cache()
    # SIGTERM unwinds from here on (Killed), so the temporary directory goes and the run never stays RUNNING
    previous = signal.signal(signal.SIGTERM, _raise_killed) if _main_thread() else None
    try:
        with step_tempdir(step):
            run = mlflow.start_run()
            run_id, status = run.info.run_id, "FAILED"
            try:
                mlflow.set_tags(
                    {
                        config.TAG_STEP: step,
                        config.TAG_CODE_DIGEST: config.code_digest(),
                        "mlflow.runName": f"{step}-{run_id[:8]}",
                        # who runs it, so that `main` can tell a run whose process died (SIGKILL) from a live one
                        config.TAG_PID: str(os.getpid()),
                        config.TAG_HOST: socket.gethostname(),
                    }
                )
                pause_point(f"{step}.started")
                logged = mlflow.get_run(run_id).data.params
                missing = {k: param_value(v) for k, v in params.items() if k not in logged}
                if missing:
                    mlflow.log_params(missing)
                yield run
                status = "FINISHED"
            except (KeyboardInterrupt, Killed):
                status = "KILLED"
                log(f"{step}: interrupted; run {run_id} ends as KILLED")
                raise SystemExit(130) from None
            finally:
                mlflow.end_run(status)
    except Killed:  # before the run started: nothing to end
        raise SystemExit(130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _bound_cache() -> None:
    """Keep the cache under its bound (workflow/cache.py), saying what went; a bad bound is a parameter error."""
    from steps.workflow import cache
    from steps.workflow.params import ParamError

    try:
        limit = cache.limit_bytes()
    except ValueError as e:
        raise ParamError(str(e)) from None
    removed = cache.prune(config.cache_dir(), limit)
    if removed:
        log(
            f"cache: removed the {len(removed)} least recently used entries of {config.cache_dir()} to stay under "
            f"{cache.LIMIT_ENV}={limit / 2**30:g}"
        )


_OWNER = ".hwr-step-owner"  # "<host> <pid>" of the step that made the directory


def _orphaned(path: Path) -> bool:
    """A step directory whose owner (on this host) is gone. Only directories holding our owner file qualify:
    $TMPDIR is shared, and a name pattern alone would also match other programs' directories."""
    try:
        host, pid = (path / _OWNER).read_text().split()
        return host == socket.gethostname() and not process_alive(int(pid))
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def step_tempdir(step: str) -> Iterator[Path]:
    """One temporary directory for the whole of a step, `$TMPDIR/hwr-<step>-<pid>-*`, removed at its end.

    Python's tempfile and every child process (TMPDIR) use it meanwhile, so MLflow's model and artifact copies,
    TensorFlow's files and the step's own scratch space all land in it and go with it, on success, failure,
    SIGTERM and Ctrl-C. What a SIGKILL leaves behind, the next step on this machine removes (its owner file
    names a process that is gone).
    """
    base = Path(tempfile.gettempdir())
    for orphan in base.glob("hwr-*-*-*"):
        if orphan.is_dir() and _orphaned(orphan):
            shutil.rmtree(orphan, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=f"hwr-{step}-{os.getpid()}-", dir=base))
    (path / _OWNER).write_text(f"{socket.gethostname()} {os.getpid()}")
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(path), str(path)
    try:
        yield path
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        shutil.rmtree(path, ignore_errors=True)


TAG_LAUNCH = "hwr.launch"  # on the run `mlflow run -e serve|infer` made: which side step it launched
SERVING_SUFFIX = "-serving"  # serve's runs live in "<experiment>-serving", beside the training experiment


def side_step(step: str, record: bool) -> Callable:
    """Decorate the command of a step that uses models rather than makes them (serve, infer).

    It keeps the training experiment for training: the run `mlflow run` made there for this entry point
    holds nothing, so it is ended at once, named "<step>-launch", and deleted by a later side step once this
    one's process is gone (see _leave_project_run for why not at once). With `record` (serve) the step gets a run of its
    own in "<experiment>-serving" (parameters, pid, host), FINISHED on a normal stop (Ctrl-C, SIGTERM,
    return), FAILED on an error; without it (infer) no run at all. Either way the step works in one temporary
    directory of its own (MLflow's model copies included), removed at the end.
    """

    def decorate(command: Callable) -> Callable:
        import functools

        @functools.wraps(command)
        def wrapper(**kwargs):
            previous = signal.signal(signal.SIGTERM, _raise_killed) if _main_thread() else None
            try:
                with step_tempdir(step):
                    return _side_run(step, record, command, kwargs)
            except Killed:
                raise SystemExit(130) from None
            finally:
                if previous is not None:
                    signal.signal(signal.SIGTERM, previous)

        return wrapper

    return decorate


def _side_run(step: str, record: bool, command: Callable, kwargs: dict) -> object:
    experiment_id = _leave_project_run(step)
    if not record:
        return command(**kwargs)
    client = MlflowClient()
    serving = _serving_experiment(client, experiment_id)
    fail_stale_runs(serving, (step,), client)  # servers that died by SIGKILL
    run = mlflow.start_run(experiment_id=serving)
    mlflow.set_tags(
        {
            config.TAG_STEP: step,
            config.TAG_PID: str(os.getpid()),
            config.TAG_HOST: socket.gethostname(),
            "mlflow.runName": f"{step}-{run.info.run_id[:8]}",
        }
    )
    mlflow.log_params({k: param_value(v) for k, v in kwargs.items()})
    status = "FAILED"
    try:
        result = command(**kwargs)
        status = "FINISHED"
        return result
    except KeyboardInterrupt:
        status = "FINISHED"  # stopping a server is its normal end
        raise
    except Killed:
        status = "KILLED"  # SIGTERM before the server took over the signal (while loading)
        raise
    finally:
        mlflow.end_run(status)


def _leave_project_run(step: str) -> str:
    """End the run `mlflow run` made for this process, if any, and label it as a launch of `step`; delete the
    launch runs of earlier side steps whose process is gone. Returns the experiment the run was in.

    The run holds nothing (serve records in its own experiment, infer nowhere), so it would best be deleted
    at once, but `mlflow run` (3.17) ends the run it made once more when the step exits, even one that is
    already ended (it compares the status string with status numbers), and fails with a traceback and exit
    code 1 on a deleted one. So it stays, ended, until the next side step finds its process gone.
    """
    run_id = os.environ.pop("MLFLOW_RUN_ID", "")
    if not run_id:
        return current_experiment_id()
    client = MlflowClient()
    experiment_id = client.get_run(run_id).info.experiment_id
    launch = f"{step}-launch"
    for key, value in {
        TAG_LAUNCH: step,
        config.TAG_PID: str(os.getpid()),
        config.TAG_HOST: socket.gethostname(),
        "mlflow.runName": launch,
    }.items():
        client.set_tag(run_id, key, value)
    client.set_terminated(run_id, "FINISHED")
    delete_finished_launches(experiment_id, client, keep=run_id)
    return experiment_id


def delete_finished_launches(experiment_id: str, client: MlflowClient, keep: str = "") -> list[str]:
    """Delete the launch runs (see _leave_project_run) of the experiment whose step process on this host is
    gone; returns their ids. One whose process still runs (a server) is left for `mlflow run` to end."""
    host, deleted = socket.gethostname(), []
    for run in client.search_runs([experiment_id], f"tags.`{TAG_LAUNCH}` != ''", max_results=1000):
        tags, run_id = run.data.tags, run.info.run_id
        pid = tags.get(config.TAG_PID, "")
        if run_id != keep and tags.get(config.TAG_HOST) == host and pid.isdigit() and not process_alive(int(pid)):
            client.delete_run(run_id)
            deleted.append(run_id)
    return deleted


def _serving_experiment(client: MlflowClient, experiment_id: str) -> str:
    name = client.get_experiment(experiment_id).name + SERVING_SUFFIX
    found = client.get_experiment_by_name(name)
    if found is not None and found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    if found is None:
        try:
            return client.create_experiment(name)
        except mlflow.exceptions.MlflowException:  # made by a concurrent server meanwhile
            found = client.get_experiment_by_name(name)
    return found.experiment_id


PAUSE_ENV = "HWR_PAUSE_AT"


def pause_point(name: str) -> None:
    """A named point where the fault suite (tests/steps/test_faults.py) stops a step: with HWR_PAUSE_AT=<name>
    the step says so on stderr and waits there to be killed. Costs nothing otherwise."""
    if os.environ.get(PAUSE_ENV) == name:
        log(f"paused at {name} (pid {os.getpid()})")
        while True:
            time.sleep(0.1)


def _raise_killed(signum, frame) -> None:
    raise Killed()


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def process_alive(pid: int) -> bool:
    """Is `pid` a live Python (or mlflow) process on this host? A reused pid of another program is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's: not one of ours, but do not touch what we cannot see
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:  # no /proc (macOS): the pid exists, take it as alive
        return True
    # a zombie (ended, not yet reaped) has an empty cmdline, so it counts as gone
    return "python" in cmdline or "mlflow" in cmdline


def stale(run: Run, host: str) -> bool:
    """A RUNNING run started on `host` whose process is gone (runs without the pid/host tags are left alone)."""
    tags = run.data.tags
    pid = tags.get(config.TAG_PID, "")
    return (
        run.info.status == "RUNNING"
        and tags.get(config.TAG_HOST) == host
        and pid.isdigit()
        and not process_alive(int(pid))
    )


def fail_stale_runs(experiment_id: str, steps: tuple[str, ...], client: MlflowClient | None = None) -> list[str]:
    """Mark the RUNNING runs of `steps` in the experiment whose process on this host is gone as FAILED;
    returns their ids. Only this host's runs are judged: a pid means nothing on another machine."""
    client = client or MlflowClient()
    host, failed = socket.gethostname(), []
    query = "attributes.status = 'RUNNING'"
    for run in client.search_runs([experiment_id], query, max_results=1000):
        if run.data.tags.get(config.TAG_STEP) in steps and stale(run, host):
            client.set_tag(run.info.run_id, "hwr.stale", f"process {run.data.tags[config.TAG_PID]} is gone")
            client.set_terminated(run.info.run_id, "FAILED")
            failed.append(run.info.run_id)
    return failed


def param_value(value: object) -> str:
    """A parameter as `mlflow run` stores it (shell-quoted: "" becomes "''"), so direct and
    `mlflow run` launches of a step log, and are matched by, the same strings."""
    from mlflow.utils.string_utils import quote

    return quote(str(value))


def log(message: str) -> None:
    """Progress and decisions go to stderr, so stdout stays clean for results (infer)."""
    print(message, file=sys.stderr, flush=True)


def current_experiment_id() -> str:
    active = mlflow.active_run()
    return active.info.experiment_id if active else os.environ.get("MLFLOW_EXPERIMENT_ID", "0")


def find_run(
    step: str,
    params: Mapping[str, object] | None = None,
    *,
    tags: Mapping[str, str] | None = None,
    require: Callable[[Run], bool] | None = None,
    experiment_id: str | None = None,
    client: MlflowClient | None = None,
    status: str | None = "FINISHED",
) -> Run | None:
    """The newest run of `step` in the experiment with this `status` (None: any) whose params equal `params`
    (compared as the strings `mlflow run` stores), whose tags equal `tags`, and for which `require(run)`
    holds; else None.

    Matching happens here rather than in the search filter: stored params are shell-quoted and may hold
    either kind of quote, which a filter string cannot always express.
    """
    client = client or MlflowClient()
    experiment_id = experiment_id or current_experiment_id()
    wanted = {k: param_value(v) for k, v in (params or {}).items()}
    query = f"tags.`{config.TAG_STEP}` = '{step}'" + (f" and attributes.status = '{status}'" if status else "")
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], query, order_by=["attributes.start_time DESC"], max_results=200, page_token=token
        )
        for run in page:
            if (
                all(run.data.params.get(k) == v for k, v in wanted.items())
                and all(run.data.tags.get(k) == v for k, v in (tags or {}).items())
                and (require is None or require(run))
            ):
                return run
        token = page.token
        if not token:
            return None


def upstream_uri(uri: str, step: str, artifact: str, params: Mapping[str, object] | None = None) -> str:
    """`uri` if given, else `runs:/<id>/<artifact>` of the newest matching finished run of `step`."""
    if uri:
        return uri
    run = find_run(step, params)
    if run is None:
        wanted = ", ".join(f"{k}={v}" for k, v in (params or {}).items()) or "any parameters"
        raise UpstreamNotFound(
            f"no finished '{step}' run ({wanted}) in this experiment: run `mlflow run . -e {step}` first "
            f"or pass the artifact URI explicitly"
        )
    found = f"runs:/{run.info.run_id}/{artifact}"
    log(f"using {found} (newest finished '{step}' run, started {run.info.start_time})")
    return found
