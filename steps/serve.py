"""Step `serve`: a REST API over the registered handwriting model: POST an image, get its transcription.

Run:
    mlflow run . -e serve --env-manager local -P model_uri="models:/HandwritingRecognitionModel/1"
    python -m steps.serve --model-uri "models:/HandwritingRecognitionModel@champion" --port 5000
    mlflow run . -e serve --env-manager local -P level=lines     # the line model's champion
    mlflow run . -e serve --env-manager local -P workers=2       # two server processes on one port

Inputs: `model_uri` ('' = models:/<registered model>@champion, of `level`: words, or lines for
models:/<registered model>-lines@champion; or models:/Name/<version>,
runs:/<run_id>/handwriting_recognition_model, any URI steps.inference.loading accepts), `host` (127.0.0.1:
loopback only unless asked), `port`, `threads` (waitress worker threads = requests handled at once),
`workers` (server processes sharing the port, each with its own model copy, threads and limits: one process
answers what one interpreter lock allows; steps/serving/workers.py), `max_batch` (most images per model
call), `follow_interval` (seconds between checks of the alias).

A server started on models:/Name@alias (the default @champion) follows it: every `follow_interval` seconds
it asks the registry which version the alias names and, when that changed, loads the new version and
switches to it between requests (none is dropped; /version says which version answers). Any other URI
(models:/Name/<version>, runs:/...) pins that model, and /version says so ("pinned": true).

Outputs: an HTTP server (waitress, a production WSGI server) with
    POST /predict   an image as a multipart file `image`, a form field `image` holding base64, a JSON body
                    {"image": "<base64>"} or a raw image body; several images as {"images": [...]} or several
                    multipart files `image`/`images`. Optional `beam_width` (query, form or JSON; 0 = greedy).
                    -> {"text": ..., "confidence": ...}, or for several images {"predictions": [...]} where a
                    bad image gets {"error": ...} and the others still succeed.
    GET /health     {"status": "ok"}
    GET /version    which model is served: name, version, alias, run id, model URI, model id, charset size,
                    "follows" (the alias followed, or null), "pinned", the level it reads (words | lines)
                    and its canvas
    GET /           a web page: drop, paste, pick or draw words, see each transcription with its calibrated
                    confidence and latency (one HTML file and a favicon, no external assets)
Errors are JSON {"error": ..., "status": ...} with a 4xx/5xx code naming the problem; no traceback reaches a
client (it is logged here). Work is bounded per request (steps/serving/limits.py: bytes, images, pixels
counting every frame, seconds) and per process (queued images, large decodes one at a time, connections):
over a limit is 413 naming it, a full server 503 with Retry-After. One log line per request (method, path,
status, ms; client text escaped) goes to stderr.

    curl -X POST -F "image=@word.png" http://localhost:5000/predict
    curl -X POST -F "image=$(base64 -w 0 word.png)" http://localhost:5000/predict

The parts are in steps/serving: request parsing, the micro-batcher, the Flask app and the page.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys

import click

from steps.serving.workers import WorkerFailed
from steps.workflow import cli, config, runs

# oneDNN's own CPU allocator pools what it frees and never returns it: one 36-megapixel decode left the server
# ~480 MB larger for good. The system allocator gives it back (with memory.release's malloc_trim) and keeps
# oneDNN's speed: turning oneDNN off instead cost 2.2x at concurrency 1 on the machine that measured it, where
# oneDNN was on by default (README, "Performance"). TensorFlow leaves oneDNN off on AVX2-only CPUs, where this
# changes nothing; serve keeps TensorFlow's default there (oneDNN was slower at batch 1). Set before
# TensorFlow is imported; a user's own setting wins.
os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")
D = config.defaults("serve")
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class PortInUse(OSError):
    """The port cannot be bound (in use, or not allowed)."""


def check_port(host: str, port: int) -> None:
    """Fail in a line, before loading anything heavy, when the server could not bind."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise PortInUse(
            f"cannot listen on {host}:{port} ({e.strerror or e}): stop what uses it (an `mlflow ui`?) "
            "or pick another port with -P port=5001"
        ) from None


# Threads of TensorFlow's pools that run one op, and ops side by side. A server's parallelism is its concurrent
# requests: what TensorFlow computes there (preprocessing, and the network for models without a Lite copy) is
# small ops on small images, which a pool of one thread runs with fewer hand-offs between threads. At
# concurrency 8 on 2 cores (README, "Performance", session 19) one thread each answered 5-8% more images/s
# with 6-10% less CPU per image (Lite network), the same at concurrency 1 with 20% less CPU (SavedModel network).
TENSORFLOW_THREADS = 1


def limit_tensorflow_threads(threads: int = TENSORFLOW_THREADS) -> None:
    """Size TensorFlow's two thread pools, unless the user did (TF_NUM_INTEROP_THREADS, TF_NUM_INTRAOP_THREADS)
    or TensorFlow already runs in this process (its pools are made once)."""
    import tensorflow as tf

    try:
        if "TF_NUM_INTEROP_THREADS" not in os.environ:
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        if "TF_NUM_INTRAOP_THREADS" not in os.environ:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:  # "cannot be modified after initialization": a second server in one process
        pass


def tensorflow_threads() -> int:
    """The intra-op threads TensorFlow runs with here (limit_tensorflow_threads's, or the user's; 0: all cores)."""
    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads()


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt


@click.command(help=__doc__.split("\n\n")[0])
@cli.model_uri_option(D["model_uri"])
@cli.level_option(D["level"])
@click.option("--host", default=D["host"], show_default=True, help="interface to bind (0.0.0.0 exposes it)")
@click.option("--port", type=click.IntRange(0, 65535), default=D["port"], show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=D["threads"],
    show_default=True,
    help="worker threads (requests handled concurrently)",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=D["workers"],
    show_default=True,
    help="server processes sharing the port, each with its own copy of the model, threads and limits",
)
@click.option(
    "--max-batch", type=click.IntRange(1), default=D["max_batch"], show_default=True, help="most images per model call"
)
@click.option(
    "--lexicon",
    default=D["lexicon"],
    show_default=True,
    help="a word list (one per line): answer with the best beam path that is one of its words ('' = off)",
)
@click.option(
    "--follow-interval",
    type=click.FloatRange(0, min_open=True),
    default=D["follow_interval"],
    show_default=True,
    help="seconds between checks of the alias a models:/Name@alias URI names (other URIs pin their model)",
)
@cli.user_errors(LookupError, PortInUse, ValueError, WorkerFailed)
@runs.side_step("serve", record=True)  # its run goes to "<experiment>-serving", not the training experiment
def main(
    model_uri: str,
    level: str,
    host: str,
    port: int,
    threads: int,
    workers: int,
    max_batch: int,
    lexicon: str,
    follow_interval: float,
) -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    check_port(host, port)
    options = dict(
        model_uri=model_uri or config.champion_uri(level),
        host=host,
        port=port,
        threads=threads,
        max_batch=max_batch,
        lexicon=lexicon,
        follow_interval=follow_interval,
    )
    try:
        if workers == 1:
            run_server(**options)
        else:
            # The supervisor imports no TensorFlow (the memory is the workers'): loading.locate needs MLflow only.
            from steps.inference import loading
            from steps.serving import workers as pool

            loading.locate(options["model_uri"])  # a typo is one line now, not one per worker after their start-up
            sock = pool.listening_socket(host, port)
            runs.log(f"{workers} worker processes will serve {host}:{port}, each loading {options['model_uri']}")
            signal.signal(signal.SIGTERM, _stop)  # from now on a stop is the normal end (see run_server)
            pool.supervise(workers, _worker, (os.getpid(), sock, options))
    except KeyboardInterrupt:
        runs.log("stopped")


def run_server(
    model_uri: str,
    host: str,
    port: int,
    threads: int,
    max_batch: int,
    lexicon: str,
    follow_interval: float,
    sock: socket.socket | None = None,
    ready=lambda: None,
    say=runs.log,
) -> None:
    """Load, warm up and serve `model_uri` until interrupted (KeyboardInterrupt), on `sock` if given (a worker
    of several) else on a socket of its own; `ready()` is called once requests are answered."""
    from steps.inference import ctc, loading
    from steps.serving import follow
    from steps.serving.app import create_app, describe
    from steps.serving.limits import Limits
    from steps.serving.server import serve, warm_up

    limit_tensorflow_threads()
    words = ctc.Lexicon.load(lexicon) if lexicon else None
    followed = follow.alias_of(model_uri)
    limits = Limits()

    def build(uri: str, alias: str | None):
        """Load, warm up and wrap one model as its own app (the follower calls it for each new version)."""
        model = loading.load(uri)
        model.preprocess_in_calling_thread(tensorflow_threads())
        warm_up(model)
        info = describe(uri, model)
        info.update(alias=alias or info["alias"], follows=followed and followed[1], pinned=not followed)
        info["lexicon"] = f"{lexicon} ({len(words)} words)" if words else None
        return create_app(model, info, max_batch, limits, lexicon=words), info

    say(f"loading {model_uri}")
    first, info = build(model_uri, None)
    say("serving " + json.dumps(info))
    app = follow.Switch(first)
    follower = None
    if followed:
        say(f"following @{followed[1]}: checking the registry every {follow_interval:g} s")
        follower = follow.Follower(
            app,
            *followed,
            info["version"],
            follow_interval,
            lambda version: build(f"models:/{followed[0]}/{version}", followed[1])[0],
        ).start()
    else:
        say(f"{model_uri} pins its model: this server does not follow an alias")
    # A stop is the normal end of a server: Ctrl-C or SIGTERM ends its run as FINISHED (runs.side_step); a
    # SIGTERM before this point, while loading, ends it KILLED.
    signal.signal(signal.SIGTERM, _stop)
    try:
        ready()
        serve(app, host, port, threads, limits, sock)
    finally:
        if follower:
            follower.stop()
        app.close()


def _worker(index: int, ready, parent: int, sock: socket.socket, options: dict) -> None:
    """One process of `serve --workers N` (steps.serving.workers.supervise starts it): the whole server, on the
    shared socket, its log lines marked with its index."""
    from steps.serving import workers as pool

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT.replace("%(message)s", f"[worker {index}] %(message)s"))
    signal.signal(signal.SIGTERM, _stop)
    pool.follow_parent(parent)
    try:
        run_server(**options, sock=sock, ready=ready.set, say=logging.getLogger("hwr.serve").info)
    except KeyboardInterrupt:
        pass
    except (LookupError, ValueError) as e:  # the supervisor reports the exit; this says why
        print(f"Error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
