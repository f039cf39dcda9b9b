"""``medsight serve``: receive studies by DICOM and analyse each once it is complete."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medsight.cli._errors import DEBUG_OPTION, run
from medsight.errors import InvalidInputError

console = Console(highlight=False, stderr=True, soft_wrap=True)


def serve(
    data_dir: Annotated[Path, typer.Option(help="Store, database and results.")] = Path(
        "medsight-data"
    ),
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL (default: SQLite in WAL mode in DATA).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address the DICOM listener binds.")] = "127.0.0.1",
    dicom_port: Annotated[int, typer.Option(min=1, max=65535, help="DICOM port.")] = 11112,
    http_port: Annotated[
        int, typer.Option(min=1, max=65535, help="HTTP port (API, worklist page).")
    ] = 8080,
    ae_title: Annotated[str, typer.Option(help="Our AE title.")] = "MEDSIGHT",
    allow_aet: Annotated[
        list[str] | None,
        typer.Option(metavar="<aet>", help="Calling AE titles allowed (default: any)."),
    ] = None,
    tls_certificate: Annotated[
        Path | None, typer.Option(help="DICOM over TLS: our certificate (PEM).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="DICOM over TLS: our private key.")] = None,
    tls_client_ca: Annotated[
        Path | None, typer.Option(help="DICOM over TLS: require client certificates from this CA.")
    ] = None,
    quiet_seconds: Annotated[
        float,
        typer.Option(min=0.0, help="A study is complete after this long without new instances."),
    ] = 10.0,
    lease_seconds: Annotated[
        float, typer.Option(min=1.0, help="A job's lease (crash recovery).")
    ] = 600.0,
    task: Annotated[str, typer.Option(help="Task name, or auto (the selection rules).")] = "auto",
    tasks_dir: Annotated[
        list[Path] | None, typer.Option(metavar="<dir>", help="Extra task folder(s).")
    ] = None,
    outputs: Annotated[str, typer.Option(help="Result outputs, as for analyze.")] = (
        "seg,sr,sc,json,html"
    ),
    push: Annotated[
        str | None, typer.Option(help="Push DICOM results to this PACS: AET@host:port.")
    ] = None,
    webhook_url: Annotated[
        str | None, typer.Option(help="POST critical findings here (signed JSON).")
    ] = None,
    webhook_secret_env: Annotated[
        str, typer.Option(help="Environment variable holding the webhook signing secret.")
    ] = "MEDSIGHT_WEBHOOK_SECRET",
    rules: Annotated[
        Path | None, typer.Option(help="Site routing rules (TOML/YAML) for automatic selection.")
    ] = None,
    stow_url: Annotated[
        str | None, typer.Option(help="Push DICOM results to this DICOMweb STOW-RS base URL.")
    ] = None,
    deidentify: Annotated[
        Path | None,
        typer.Option(
            metavar="<keyfile>",
            help="De-identify every instance as it is received (PS3.15, as `medsight "
            "deidentify`, with this key); the worklist then shows pseudonyms.",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (analysis).")] = 1,
    max_upload_mb: Annotated[
        int, typer.Option(min=1, help="Largest HTTP request body (STOW-RS, uploads).")
    ] = 256,
    max_associations: Annotated[
        int, typer.Option(min=1, help="Simultaneous DICOM associations.")
    ] = 10,
    monitor_seconds: Annotated[
        float, typer.Option(min=1.0, help="How often drift monitoring is recomputed.")
    ] = 60.0,
    monitor_window: Annotated[
        int, typer.Option(min=5, help="Drift monitoring's rolling window (analyses).")
    ] = 20,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            metavar="<origin>",
            help="A viewer origin allowed to call the API with a bearer token "
            "(e.g. http://ohif.example:3000).",
        ),
    ] = None,
    dev: Annotated[
        bool,
        typer.Option(
            "--dev", help="Development mode: allows default secrets, creates admin/medsight."
        ),
    ] = False,
    debug: DEBUG_OPTION = False,
) -> None:
    """Listen for DICOM and HTTP, store each instance durably before acknowledging it, and
    analyse each study after its quiet period; a restart finishes every received study."""

    def action() -> None:
        import logging
        import os
        import threading

        import uvicorn

        from medsight.analysis import AnalysisOptions
        from medsight.analysis.inputs import study_key_of
        from medsight.analysis.outputs import parse_outputs
        from medsight.service import InstanceStore
        from medsight.service.app import ServiceSettings, create_app
        from medsight.service.auth import Users
        from medsight.service.drift_watch import DriftWatch
        from medsight.service.events import configure_service_logging, log_event
        from medsight.service.intake import DicomListener
        from medsight.service.outbound import Outbound, PacsTarget
        from medsight.service.runtime import WorkerConfig, WorkerPool, bind_http, check_secrets
        from medsight.service.worklist import Worklist, identifiers_from_store
        from medsight.tasks.selection import load_rules

        configure_service_logging(logging.DEBUG if debug else logging.INFO)
        for origin in cors_origin or []:
            if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?", origin):
                raise InvalidInputError(
                    f"--cors-origin {origin!r} is not an origin (scheme://host[:port], no path)"
                )
        if push:
            PacsTarget.parse(push)  # a bad value is refused before anything starts
        pseudonyms = None
        if deidentify is not None:
            from medsight.deid import Pseudonyms, load_key

            if push or stow_url:
                raise InvalidInputError(
                    "--deidentify cannot be used with --push or --stow-url: results would "
                    "carry pseudonymous UIDs the source PACS does not know"
                )
            pseudonyms = Pseudonyms(load_key(deidentify))
        store = InstanceStore(
            data_dir, database_url, lease_seconds=lease_seconds, pseudonyms=pseudonyms
        )
        store.remove_partials()  # writes a crash interrupted: never acknowledged

        def reclaim() -> None:
            """Put back at once the jobs of workers that are gone (an earlier run's)."""
            for uid in store.queue.reclaim_leases_of_gone_workers():
                log_event("lease-reclaimed", study_key=study_key_of(uid), study_instance_uid=uid)

        reclaim()
        indexed = Worklist(store.engine).reconcile(
            store.data_dir / "results", identifiers_from_store(store)
        )
        secret = os.environ.get(webhook_secret_env, "").encode()
        check_secrets(Users(store.engine), dev=dev, webhook_url=webhook_url, webhook_secret=secret)
        site = load_rules(rules) if rules else None
        http_socket = bind_http(host, http_port)  # before the DICOM port: nothing half-bound
        options = AnalysisOptions(
            task=task,
            tasks_dirs=list(tasks_dir or []),
            outputs=parse_outputs(outputs),
            rules=list(site.rules) if site and site.rules else None,
            rules_version=site.version if site else "",
            site_setting=site.triage.setting if site else "",
            urgent_findings=site.triage.urgent_findings() if site else (),
            # the workers share the cores: oversubscribed thread pools are slower than none
            threads=max(1, (os.cpu_count() or 1) // workers),
        )
        pool = WorkerPool(
            WorkerConfig(
                data_dir=data_dir,
                database_url=database_url,
                lease_seconds=lease_seconds,
                quiet_seconds=quiet_seconds,
                options=options,
                pacs=PacsTarget.parse(push) if push else None,
                stow_url=stow_url,
                webhook_url=webhook_url,
                webhook_secret=secret,
                ae_title=ae_title,
            ),
            workers,
            on_restart=reclaim,
        )
        listener = DicomListener(
            store,
            ae_title=ae_title,
            allowed_calling_aets=allow_aet,
            maximum_associations=max_associations,
        )
        listener.start(
            host,
            dicom_port,
            tls_certificate=tls_certificate,
            tls_key=tls_key,
            tls_client_ca=tls_client_ca,
        )
        settings = ServiceSettings(
            max_upload_bytes=max_upload_mb * 1024 * 1024,
            tasks_dirs=list(tasks_dir or []),
            cors_origins=list(cors_origin or []),
        )
        web = uvicorn.Server(
            uvicorn.Config(
                create_app(store, settings),
                log_level="warning",
                log_config=None,  # uvicorn's records go through the service's one-line log
                access_log=False,  # URLs can carry identifiers; the audit log says who did what
            )
        )
        threading.Thread(
            target=web.run, kwargs={"sockets": [http_socket]}, name="http", daemon=True
        ).start()
        watch = DriftWatch(
            store,
            Outbound(store.engine, store.data_dir, webhook_url=webhook_url, webhook_secret=secret),
            tasks_dirs=list(tasks_dir or []),
            window=monitor_window,
        )

        def watching() -> None:
            while True:
                time.sleep(monitor_seconds)
                try:
                    watch.refresh()
                except Exception:  # monitoring never stops the service; the log says why
                    logging.getLogger("medsight.monitoring").exception("monitoring failed")

        threading.Thread(target=watching, name="monitoring", daemon=True).start()
        log_event(
            "started",
            dicom=f"{ae_title}@{host}:{dicom_port}",
            http=f"{host}:{http_port}",
            workers=workers,
            worklist_rows_indexed=indexed,
        )
        console.print(
            f"medsight serve: DICOM {ae_title}@{host}:{dicom_port}, HTTP http://{host}:"
            f"{http_port}/, {workers} worker(s), data in {data_dir}"
            f"{' (DEVELOPMENT MODE)' if dev else ''} - research use only, not for diagnostic use"
        )
        try:
            checked = time.monotonic()
            while True:
                pool.check()
                if time.monotonic() - checked > 5:  # a worker of an earlier run may die late
                    reclaim()
                    checked = time.monotonic()
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            web.should_exit = True
            listener.stop()
            pool.stop()

    run(action, debug=debug)
