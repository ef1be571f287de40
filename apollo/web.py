"""`apollo web`: a local page that restores uploaded files, plays them A/B and offers the result.

A small ASGI app (Starlette, served by uvicorn; the `[web]` extra) with one static page. Uploads
go to a private temporary folder under server-made names; the client only ever names a job by
its random id, and a job is visible only to the browser session (cookie) that created it. One
worker thread restores the queued files one at a time with the same Restorer as `apollo
restore` (chunked, flat memory), so a page's download equals the CLI's output for the same
settings. Jobs and their files are removed when the page deletes them, after `keep_minutes`,
and all of them when the server stops.
"""

from __future__ import annotations

import contextlib
import queue
import re
import secrets
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import audio
from .api import NAMED_RATES
from .inference import PRECISIONS
from .pretrained import BUILT_IN, TEST_MODEL, WEIGHTS
from .spectrogram import tee_spectrogram

STATIC = Path(__file__).parent / "web_static"
SESSION_COOKIE = "apollo_session"
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
FORMATS = {"flac": ("16", "24"), "wav": ("16", "24", "32f")}


@dataclass
class Job:
    id: str
    session: str
    name: str  # the uploaded file's name, for display and the download's name only
    folder: Path
    source: Path
    model: str
    precision: str
    fmt: str
    bits: str
    rate: str = "model"  # api.NAMED_RATES, as apollo restore --out-rate
    state: str = "queued"  # queued, running, done, error
    progress: float = 0.0
    duration: float = 0.0
    error: str | None = None
    note: str | None = None  # what the restore decided that the user should know (api.dark_source_message)
    created: float = field(default_factory=time.time)

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "state": self.state, "progress": round(self.progress, 4),
                "duration": round(self.duration, 2), "error": self.error, "note": self.note, "model": self.model,
                "precision": self.precision, "format": self.fmt, "bits": self.bits, "rate": self.rate,
                "download_name": self.download_name}

    @property
    def download_name(self) -> str:
        return f"{Path(self.name).stem or 'audio'}-restored.{self.fmt}"

    @property
    def restored(self) -> Path:
        return self.folder / f"restored.{self.fmt}"


class Service:
    """The server's state: the models it offers, the jobs, the worker that restores them."""

    def __init__(self, checkpoints: str | Path | None = None, device: str = "auto", threads: int | None = None,
                 max_upload_mb: float = 500.0, keep_minutes: float = 60.0) -> None:
        self.models = self._models(Path(checkpoints) if checkpoints else None)
        self.device, self.threads = device, threads
        self.max_upload = int(max_upload_mb * 1024 * 1024)
        self.keep_seconds = keep_minutes * 60
        self.root = Path(tempfile.mkdtemp(prefix="apollo-web-"))
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.restorers: dict[tuple[str, str], Any] = {}
        self.worker = threading.Thread(target=self._work, name="apollo-web-worker", daemon=True)
        self.worker.start()

    @staticmethod
    def _models(folder: Path | None) -> dict[str, str]:
        """Model names the page may choose -> what load_model gets. Nothing else reaches it."""
        models = {name: name for name in BUILT_IN if (WEIGHTS / BUILT_IN[name]).is_file()}
        models[TEST_MODEL] = TEST_MODEL
        if folder is not None:
            if not folder.is_dir():
                raise ValueError(f"--checkpoints {folder}: not a folder")
            for path in sorted(folder.iterdir()):
                if path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES and path.name not in models:
                    models[path.name] = str(path)
        return models

    def options(self) -> dict[str, Any]:
        return {"models": list(self.models), "default_model": "default" if "default" in self.models else
                next(iter(self.models)), "precisions": list(PRECISIONS), "formats": FORMATS, "rates": list(NAMED_RATES),
                "max_upload_mb": round(self.max_upload / 1024 / 1024, 2)}

    # -- jobs ---------------------------------------------------------------------------------

    def submit(self, session: str, name: str, upload: Any, model: str, precision: str, fmt: str, bits: str,
               rate: str = "model") -> Job:
        """Stores an upload (a binary file object) as a new job; ValueError for bad settings."""
        if model not in self.models:
            raise ValueError(f"unknown model {model!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}")
        if bits not in FORMATS.get(fmt, ()):
            raise ValueError(f"{fmt.upper()} cannot store {bits}-bit samples")
        if rate not in NAMED_RATES:
            raise ValueError(f"unknown sample rate {rate!r} (model or input)")
        self.expire()
        job_id = secrets.token_urlsafe(12)
        folder = self.root / job_id
        folder.mkdir()
        name = _display_name(name)
        job = Job(job_id, session, name, folder, folder / f"upload{_safe_suffix(name)}", model, precision, fmt, bits,
                  rate)
        written = 0
        with open(job.source, "wb") as out:
            while chunk := upload.read(1 << 20):
                written += len(chunk)
                if written > self.max_upload:
                    shutil.rmtree(folder, ignore_errors=True)
                    raise OverflowError(f"{name}: larger than the upload limit of {self.options()['max_upload_mb']} MB")
                out.write(chunk)
        with self.lock:
            self.jobs[job_id] = job
        self.queue.put(job)
        return job

    def get(self, session: str, job_id: str) -> Job | None:
        with self.lock:
            job = self.jobs.get(job_id)
        return job if job is not None and secrets.compare_digest(job.session, session) else None

    def delete(self, job: Job) -> None:
        with self.lock:
            self.jobs.pop(job.id, None)
        if job.state not in ("queued", "running"):
            shutil.rmtree(job.folder, ignore_errors=True)
        # a queued or running job's folder goes when the worker reaches or finishes it

    def expire(self) -> None:
        old = time.time() - self.keep_seconds
        with self.lock:
            stale = [job for job in self.jobs.values() if job.created < old and job.state in ("done", "error")]
        for job in stale:
            self.delete(job)

    def close(self) -> None:
        self.queue.put(None)
        self.worker.join(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)

    def _work(self) -> None:
        while True:
            try:
                job = self.queue.get(timeout=60)
            except queue.Empty:
                self.expire()  # finished jobs go after keep_minutes even when nobody uploads
                continue
            if job is None:
                return
            with self.lock:
                live = job.id in self.jobs
            if live:
                self._restore(job)
            with self.lock:
                if job.id not in self.jobs:  # deleted while it ran
                    shutil.rmtree(job.folder, ignore_errors=True)

    def _restorer(self, model: str, precision: str) -> Any:
        from .api import Restorer

        key = (model, precision)
        if key not in self.restorers:
            self.restorers[key] = Restorer(self.models[model], device=self.device, precision=precision,
                                           threads=self.threads)
        return self.restorers[key]

    def _restore(self, job: Job) -> None:
        from .api import dark_source_message, output_rate

        job.state = "running"
        try:
            info = audio.probe(job.source)
            job.duration = info.duration
            restorer = self._restorer(job.model, job.precision)
            done = 0.0

            def step(seconds: float) -> None:
                nonlocal done
                done += seconds
                job.progress = min(0.99, done / max(info.duration, 1e-9))

            def dark(limit_hz: float, rule_hz: float) -> None:
                job.note = dark_source_message(limit_hz, rule_hz)

            restorer.restore_file(job.source, job.restored, fmt=job.fmt, bits=job.bits, on_progress=step, info=info,
                                  on_dark=dark, out_rate=job.rate)
            rate = output_rate(job.rate, info.sample_rate, restorer.sample_rate)
            preview = job.folder / "preview.wav"  # the input at the output's rate: the A/B player switches in step
            import soundfile as sf

            blocks = audio.resample_blocks(audio.read_blocks(info), info.sample_rate, rate, info.channels)
            with sf.SoundFile(str(preview), "w", rate, info.channels, "PCM_16", format="WAV") as out:
                for block in tee_spectrogram(blocks, info.frames * rate / info.sample_rate, job.folder / "input.png"):
                    out.write(np.clip(block, -1, 1).T)
            with sf.SoundFile(str(job.restored)) as restored:
                reader = (b.T for b in restored.blocks(audio.BLOCK, dtype="float32", always_2d=True))
                for _ in tee_spectrogram(reader, restored.frames, job.folder / "restored.png"):
                    pass
            job.progress, job.state = 1.0, "done"
        except (audio.AudioError, ValueError, RuntimeError, OSError) as err:  # CheckpointError is a ValueError
            # the CLI's one line, with the name the user gave instead of the server's path
            job.error = "apollo: error: " + str(err).replace(str(job.source), job.name)
            job.state = "error"
        except Exception as err:  # noqa: BLE001 - a bug must fail its job, not stop the worker for every later one
            job.error = f"apollo: error: internal error ({type(err).__name__}: {err}); please report it"
            job.state = "error"
            traceback.print_exc()


def _display_name(name: str) -> str:
    name = Path(str(name).replace("\\", "/")).name  # a bare name: no folders from the client
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).strip()[:200]
    return name or "upload"


def _safe_suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ".bin"


# -- the ASGI app ------------------------------------------------------------------------------

def require_web() -> None:
    """MissingExtra (one line naming the install) unless the [web] extra is installed."""
    from .optional import require

    for module in ("starlette", "uvicorn", "python_multipart"):
        require(module, "web", "apollo web")


def create_app(service: Service) -> Any:
    """The Starlette app of `service`: the page, and a JSON API that only ever takes job ids."""
    require_web()
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Route

    def session_of(request: Request) -> str | None:
        token = request.cookies.get(SESSION_COOKIE)
        return token if token and re.fullmatch(r"[A-Za-z0-9_-]{20,64}", token) else None

    async def page(request: Request) -> Response:
        response = FileResponse(STATIC / "index.html", media_type="text/html")
        if session_of(request) is None:
            response.set_cookie(SESSION_COOKIE, secrets.token_urlsafe(24), httponly=True, samesite="strict")
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self'; media-src 'self'; "
                                                       "style-src 'self' 'unsafe-inline'; script-src 'self' "
                                                       "'unsafe-inline'")
        return response

    async def options(request: Request) -> Response:
        return JSONResponse(service.options())

    def error(message: str, status: int) -> Response:
        return JSONResponse({"error": message}, status_code=status)

    async def submit(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return error("no session: reload the page", 403)
        length = request.headers.get("content-length", "")
        if not length.isdigit():
            return error("uploads need a Content-Length", 411)
        limit_mb = service.options()["max_upload_mb"]
        if int(length) > service.max_upload + 65536:
            return error(f"larger than the upload limit of {limit_mb} MB", 413)
        async with request.form(max_files=1, max_fields=8, max_part_size=4096) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                return error("no file in the upload", 400)
            fields = {key: str(form.get(key, "")) for key in ("model", "precision", "format", "bits", "rate")}
            try:
                job = service.submit(session, upload.filename or "upload", upload.file,
                                     fields["model"] or service.options()["default_model"],
                                     fields["precision"] or "fp32", fields["format"] or "flac", fields["bits"] or "24",
                                     fields["rate"] or "model")
            except OverflowError as err:
                return error(str(err), 413)
            except ValueError as err:
                return error(str(err), 400)
        return JSONResponse(job.public(), status_code=201)

    def job_of(request: Request) -> Job | None:
        session = session_of(request)
        return service.get(session, request.path_params["job"]) if session else None

    async def status(request: Request) -> Response:
        job = job_of(request)
        if job is None:
            return error("no such job", 404)
        if request.method == "DELETE":
            service.delete(job)
            return JSONResponse({"deleted": job.id})
        return JSONResponse(job.public())

    async def file(request: Request) -> Response:
        job = job_of(request)
        kind = request.path_params["kind"]
        if job is None or job.state != "done":
            return error("no such file", 404)
        if kind == "restored":
            media = "audio/flac" if job.fmt == "flac" else "audio/wav"
            name = job.download_name if request.query_params.get("download") else None
            return FileResponse(job.restored, media_type=media, filename=name)
        paths = {"input": (job.folder / "preview.wav", "audio/wav"),
                 "input.png": (job.folder / "input.png", "image/png"),
                 "restored.png": (job.folder / "restored.png", "image/png")}
        if kind not in paths:
            return error("no such file", 404)
        path, media = paths[kind]
        return FileResponse(path, media_type=media)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        service.close()  # the server stops: every job's files go

    routes = [Route("/", page), Route("/api/options", options), Route("/api/jobs", submit, methods=["POST"]),
              Route("/api/jobs/{job}", status, methods=["GET", "DELETE"]), Route("/api/jobs/{job}/{kind}", file)]
    return Starlette(routes=routes, lifespan=lifespan)


def serve(service: Service, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Runs the page until interrupted (apollo web); the service's files go when it stops."""
    require_web()
    import uvicorn

    try:
        uvicorn.run(create_app(service), host=host, port=port, log_level="warning")
    finally:
        service.close()
