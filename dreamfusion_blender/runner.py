"""Start engine jobs from Blender and act on their events: progress, preview, import on success.

The UI path: an operator calls ``start_*``, a bpy.app.timers callback (``tick``) drains the worker's
queue on the main thread, and ``finish`` runs exactly once when the process has exited. The batch /
background path calls ``wait`` instead, which blocks on the same worker and then calls ``finish``.
Tests drive ``tick`` by hand, because timers never fire in bpy-as-a-module.
"""

from __future__ import annotations

import os

import bpy

from . import engine_cli, importer, model_store, preview, provenance
from .jobs import MANAGER, Job, QueuedRun
from .prefs import Settings, engine_environment, settings
from .worker import Worker

TICK_S = 0.25
# Operators block until the run ends when Blender runs in background mode, because timers never fire
# once a --background script returns. Tests set this False to exercise the timer path (calling tick()).
BLOCK_IN_BACKGROUND = True


def request_from_scene(scene, s: Settings | None = None) -> engine_cli.GenerateRequest:
    p = scene.dreamfusion
    s = s or settings()
    return engine_cli.GenerateRequest(
        prompt=p.prompt, negative_prompt=p.negative_prompt, preset=p.preset, seed=p.seed, steps=p.steps or None,
        guidance_scale=p.guidance_scale or None, start_shape=None if p.start_shape == "DEFAULT" else p.start_shape, texture_size=p.texture_size or None,
        mesh_resolution=p.mesh_resolution or None, target_faces=p.target_faces or None,
        refine_steps=getattr(p, "refine_steps", 0) or None, model=s.model, device=s.device, out=s.output_dir, extra=s.extra,
    )


def _start(kind: str, argv: list[str], label: str, scene, env: dict | None = None, **info) -> Job:
    """Raises jobs.Busy if a job runs, FileNotFoundError if the engine source is missing."""
    job = Job(kind=kind, worker=Worker(argv, env=env or engine_environment()), label=label,
              info={"scene": scene.name if scene else None, **info})
    MANAGER.start(job)
    if scene is not None:
        scene.dreamfusion.last_status = f"{kind}: starting the engine..."
    preview.clear()
    return job


def start_generate(scene, req: engine_cli.GenerateRequest, python: str | None = None) -> Job:
    argv = engine_cli.generate_argv(python or settings().python, req)
    return _start("generate", argv, req.prompt, scene, prompt=req.prompt)


def queue_generate(scene, req: engine_cli.GenerateRequest) -> Job | QueuedRun:
    """Start now if the engine is free, else wait in the queue (started by ``tick`` / ``run_queue``)."""
    if not MANAGER.busy and not MANAGER.queue and (MANAGER.current is None or MANAGER.current.handled):
        return start_generate(scene, req)
    run = MANAGER.enqueue(QueuedRun(label=req.prompt, request=req, scene=scene.name if scene else None))
    ensure_timer()
    return run


def start_texture(scene, req, python: str | None = None) -> Job:
    """Texture selected: the engine's ``texture`` command on the snapshot OBJ (dreamfusion_blender/texture_job.py)."""
    from . import texture_io, texture_job

    argv = texture_io.texture_argv(python or settings().python, req)
    job = _start("texture", argv, f"{req.object_name}: {req.prompt}", scene, request=req, prompt=req.prompt)
    if scene is not None:
        obj = texture_job.find_object(req)
        scene.dreamfusion.texture_object = obj
    return job


def queue_texture(scene, req) -> Job | QueuedRun:
    """Start now if the engine is free, else wait behind the running job (like Generate)."""
    if not MANAGER.busy and not MANAGER.queue and (MANAGER.current is None or MANAGER.current.handled):
        return start_texture(scene, req)
    run = MANAGER.enqueue(QueuedRun(label=f"{req.object_name}: {req.prompt}", request=req,
                                    scene=scene.name if scene else None))
    ensure_timer()
    return run


def start_texture_resume(scene, run_dir: str) -> Job:
    """``texture --resume RUN``; the result goes onto the scene's last texture object."""
    from . import texture_io

    s = settings()
    obj = scene.dreamfusion.texture_object
    label = f"{obj.name if obj else '?'}: resume {run_dir}"
    return _start("texture", texture_io.texture_resume_argv(s.python, run_dir, s.device), label, scene,
                  request=None, resumed=True)


def start_next() -> Job | None:
    """Start the next queued generation if the engine is free; a run that cannot start is recorded and skipped."""
    while True:
        run = MANAGER.pop_next()
        if run is None:
            return None
        scene = bpy.data.scenes.get(run.scene or "") or bpy.context.scene
        try:
            if getattr(run.request, "kind", "") == "texture":
                from . import texture_job

                job = start_texture(scene, run.request)
            else:
                job = start_generate(scene, run.request)
        except (FileNotFoundError, ValueError) as exc:
            MANAGER.history.append((run.label, f"not started: {exc}"))
            continue
        job.info["queued"] = True
        return job


def start_download(repo_id: str) -> Job:
    from .prefs import models_dir

    argv = model_store.download_argv(settings().python, repo_id, models_dir())
    # The user asked for this download with online access on: an HF_HUB_OFFLINE inherited from the shell
    # that started Blender does not apply to it (the operator refuses when online access is off).
    env = dict(engine_environment(), HF_HUB_OFFLINE="0")
    return _start("download", argv, repo_id, None, env=env)


def start_resume(scene, run_dir: str) -> Job:
    s = settings()
    return _start("resume", engine_cli.resume_argv(s.python, run_dir, s.device), run_dir, scene)


def start_export(scene, run_dir: str) -> Job:
    s, p = settings(), scene.dreamfusion
    argv = engine_cli.export_argv(s.python, run_dir, p.mesh_resolution or None, p.texture_size or None, s.device,
                                  p.target_faces or None)
    return _start("export", argv, run_dir, scene)


def poll(job: Job) -> None:
    """Apply queued events; refresh the preview image when a new one arrived."""
    before = job.state.preview_path
    job.worker.poll()
    if job.state.preview_path and job.state.preview_path != before:
        preview.show(job.state.preview_path)


def _redraw() -> None:
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


def tick():
    """bpy.app.timers callback: returns the next interval while the job runs, None to stop."""
    job = MANAGER.current
    if job is not None:
        poll(job)
        if not job.running and not job.handled:
            finish(job, bpy.context)
    job = start_next() or job
    try:
        _redraw()
    except (AttributeError, ReferenceError):
        pass
    return TICK_S if (job is not None and job.running) or MANAGER.queue else None


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK_S)


def wait(job: Job, on_event=None, timeout: float | None = None) -> tuple[bool, str, object]:
    """Block until ``job`` ends (background mode / batch), then ``finish`` it."""
    def _each(ev, state):
        if ev.get("event") == "preview" and not bpy.app.background:
            preview.show(state.preview_path)
        if on_event:
            on_event(ev, state)

    job.worker.wait(timeout=timeout, on_event=_each)
    if job.running:  # timeout: stop it and say so
        job.worker.cancel()
        job.worker.wait(timeout=90)
        job.worker.kill()
        job.worker.wait(timeout=10)
    return finish(job, bpy.context)


def run_queue(on_event=None, timeout: float | None = None) -> list[tuple[str, bool, str]]:
    """Background mode: run the current job and every queued one to the end, blocking; (label, ok, message) each."""
    out = []
    job = MANAGER.current if MANAGER.busy else start_next()
    while job is not None:
        ok, msg, _ = wait(job, on_event=on_event, timeout=timeout)
        out.append((job.label, ok, msg))
        job = start_next()
    return out


def _import_result(job: Job, context, scene, glb: str, props: dict):
    """A generation adds an object; a re-export replaces the run's object in place unless asked to keep it."""
    p = scene.dreamfusion if scene is not None else None
    size = p.size if p is not None else 1.0
    if job.kind == "export" and p is not None and not p.keep_previous:
        target = importer.find_result(scene, job.label)
        if target is not None:
            return importer.replace_mesh(context, target, glb, props, size=size)
    return importer.import_glb(context, glb, props.get("prompt") or job.label, props, size=size)


def finish(job: Job, context) -> tuple[bool, str, object]:
    """Act on a finished job once: import on success, else report. Returns (ok, message, object)."""
    if job.handled:
        return job.state.succeeded, job.state.message, job.info.get("object")
    job.handled = True
    st = job.state
    scene = bpy.data.scenes.get(job.info.get("scene") or "") or context.scene
    p = scene.dreamfusion if scene is not None else None
    if p is not None and st.run_dir:
        p.last_run_dir = st.run_dir
    obj, ok = None, False
    if job.kind == "check":
        ok, msg = st.check is not None and bool(st.check.get("ok")), st.message
    elif job.kind == "download":
        ok = st.succeeded
        msg = f"downloaded {job.label}" if ok else (st.message or "the download stopped")
    elif job.kind == "texture" and st.succeeded:
        from . import texture_apply

        try:
            obj, msg = texture_apply.apply(context, scene, job)
            ok = True
        except texture_apply.ApplyFailed as exc:  # the engine finished, the texture could not go on: a failed job
            msg, st.status = str(exc), "failed"
    elif st.succeeded:
        glb = st.asset.get("glb")
        if not glb or not os.path.isfile(glb):
            msg = f"the engine finished but wrote no .glb ({glb}); re-export from {st.run_dir}"
        else:
            props = provenance.collect(st.run_dir, st)
            try:
                obj = _import_result(job, context, scene, glb, props)
                ok, msg = True, f"imported '{obj.name}' from {glb}"
            except importer.ImportFailed as exc:
                msg = str(exc)
    else:
        msg = st.message or "the engine stopped without a result"
        if "No module named" in job.worker.stderr_tail():
            msg += " - the engine's Python lacks its packages: press 'Set up engine' in the add-on preferences"
    job.info["object"] = obj
    st.message = msg
    if job.kind == "texture":  # the engine keeps its own copy of the mesh in the run folder (for --resume)
        from . import texture_job

        texture_job.discard_input(job.info.get("request"))
    if job.kind == "download":
        from . import prefs

        prefs._redraw_prefs_safe()
    if job.kind in ("generate", "texture"):
        MANAGER.history = (MANAGER.history + [(job.label, "done" if ok else f"{st.status}: {msg}")])[-20:]
    if p is not None:
        p.last_status = f"{job.kind} {st.status}: {msg}" if not ok else f"{job.kind} done: {msg}"
        if job.kind == "generate":
            p.last_prompt = job.label
        if job.kind in ("generate", "texture"):  # Resume / Re-export follow the kind of the last run
            p.last_run_kind = job.kind
    report({"INFO"} if ok else ({"WARNING"} if st.status == "cancelled" else {"ERROR"}), f"DreamFusion {job.kind}: {msg}")
    return ok, msg, obj


def report(kind: set, message: str) -> None:
    """The Info log from outside an operator: go through the tiny report operator (prints when headless)."""
    try:
        bpy.ops.dreamfusion.report(type=next(iter(kind)), message=message)
    except (AttributeError, RuntimeError):
        print(message)
