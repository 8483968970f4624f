"""``manage.py demo`` / ``opstwin demo``: the whole OpsTwin loop on the SKAB pump data, and with
``--dataset nab-dev`` a NAB file as a second, univariate twin beside the pump."""

from __future__ import annotations

import atexit
import dataclasses
import json
import signal
import socket
import threading
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from demo import nab, runner
from demo.device import SimulatedDevice
from demo.plant import DEFAULT_FAULT, FaultPlan, Plant
from demo.policy_document import ensure_demo_policy
from demo.provision import create_demo_users, create_skab_twin
from demo.replay import AckWindow, RunOn, publish_runs
from demo.skab import default_data_dir, list_files, read_run
from opstwin_site.embedded import stop_embedded_database
from policy.sweeper import PolicySweeper
from twins.roles import grant_twin_to_role_groups


def _plain(value):
    """JSON for what ``json`` does not know in the summary: dataclasses (label agreement, with
    their rates), datetimes (NAB onsets)."""
    if dataclasses.is_dataclass(value):
        rates = {k: getattr(value, k) for k in ("precision", "recall", "f1")
                 if hasattr(value, k)}
        return dataclasses.asdict(value) | rates
    return str(value)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _exit_on_sigterm(signum, _frame) -> None:
    """SIGTERM ends the demo like Ctrl-C does: ``finally`` blocks stop the children and the
    broker, and ``atexit`` stops the embedded PostgreSQL (a bare SIGTERM would skip both)."""
    raise SystemExit(128 + signum)


class Command(BaseCommand):
    help = ("Migrate, create the SKAB twin and demo users, start the web server, replay SKAB "
            "over MQTT through ingest, detection, simulation and policy, print a summary.")

    def add_arguments(self, parser):
        parser.add_argument("--data", default=None,
                            help="SKAB folder (default: $OPSTWIN_SKAB_DIR, else "
                                 "../shared/datasets/skab)")
        parser.add_argument("--files", nargs="*", default=None,
                            help="only these files or groups, e.g. valve1/0.csv other")
        parser.add_argument("--rate", type=float, default=450.0,
                            help="events per second published (default 450: ~2 min for all files)")
        parser.add_argument("--port", type=int, default=8000, help="web server port")
        parser.add_argument("--broker-port", type=int, default=1884,
                            help="port of the embedded MQTT broker (used when MQTT_URL is unset)")
        parser.add_argument("--exit", action="store_true", help="stop after the summary")
        parser.add_argument("--keep", action="store_true",
                            help="keep the existing SKAB twin instead of starting afresh")
        parser.add_argument("--password", default=None,
                            help="password for every demo user (default: random, printed)")
        parser.add_argument("--timeout", type=float, default=900.0,
                            help="seconds to wait for ingest and processing")
        parser.add_argument("--dataset", action="append", choices=["skab", "nab-dev"],
                            default=None,
                            help="nab-dev: also replay a NAB development file as a second twin "
                                 "(nab-dev, one generic asset) beside the SKAB pump")
        parser.add_argument("--nab-data", default=None,
                            help="NAB folder (default: $OPSTWIN_NAB_DIR, else "
                                 "../shared/datasets/nab-dev)")
        parser.add_argument("--nab-file", default=nab.DEFAULT_FILE,
                            help=f"NAB file to replay (default {nab.DEFAULT_FILE})")
        parser.add_argument("--nab-rows", type=int, default=nab.DEFAULT_ROWS,
                            help=f"rows of it to replay (default {nab.DEFAULT_ROWS})")
        parser.add_argument("--fault", default=DEFAULT_FAULT, metavar="MODE[:EVERY]",
                            help="commands the simulated plant gets wrong while acking them "
                                 "ok, so rollbacks still show: none, ignore, wrong-way or "
                                 "mixed (wrong-way and ignore in turn), on every EVERY-th "
                                 "command with an effect (default "
                                 f"{DEFAULT_FAULT}; 'none': the plant follows every command)")
        parser.add_argument("--plant-seed", type=int, default=0,
                            help="seed of the plant's draws from the what-if model (default 0)")
        parser.add_argument("--summary-json", default=None, metavar="PATH",
                            help="also write the summary as JSON to PATH")

    def handle(self, *args, **opts):
        # Stop what we start: the embedded PostgreSQL, if this process started it (the web
        # server and workers only join it), stops when the demo ends, however it ends.
        atexit.register(stop_embedded_database)
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        root = Path(opts["data"]) if opts["data"] else default_data_dir(settings.BASE_DIR)
        try:
            names = list_files(root, opts["files"])
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from exc
        nab_run = self._read_nab(opts) if "nab-dev" in (opts["dataset"] or []) else None
        try:
            faults = FaultPlan.parse(opts["fault"])
            plant = Plant(faults, seed=opts["plant_seed"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if not _port_free(opts["port"]):
            raise CommandError(f"port {opts['port']} is taken; pass --port")
        if not settings.MQTT_URL and not _port_free(opts["broker_port"]):
            raise CommandError(f"port {opts['broker_port']} is taken; pass --broker-port")
        call_command("migrate", interactive=False, verbosity=0)
        with self._progress("reading SKAB", total=len(names), unit="files",
                            rate=False) as progress:
            runs = []
            for name in names:
                runs.append(read_run(root, name))
                progress.update()
        twin = create_skab_twin(names, reset=not opts["keep"])
        credentials = create_demo_users(opts["password"])
        grant_twin_to_role_groups(twin)  # roles act per twin: every role group gets SKAB
        self.stdout.write(ensure_demo_policy(twin))
        self._nab = None
        if nab_run is not None:
            nab_twin = nab.create_nab_twin(nab_run, reset=not opts["keep"])
            grant_twin_to_role_groups(nab_twin)
            self.stdout.write(ensure_demo_policy(nab_twin))
            self._nab = (nab_twin, nab_run)
        broker = runner.start_broker(opts["broker_port"])
        self._line(broker.describe())
        try:
            children = runner.start_children(broker.url, opts["port"], web=True)
            # acks commands; its plant makes the replayed telemetry answer back
            self._plant = plant
            self._line(f"simulated plant faults: {faults.describe()}")
            slugs = [twin.slug] + ([self._nab[0].slug] if self._nab else [])
            device = self._device = SimulatedDevice(broker.url, slugs, plant=self._plant)
            sweeper = PolicySweeper()  # expiry, verification, audit anchors (no beat here)
            try:
                device.start()
                sweeper.start()
                self._run(twin, runs, broker.url, children, credentials, opts)
            finally:
                sweeper.stop()
                device.stop()
                children.stop()
        finally:
            broker.stop()

    def _read_nab(self, opts) -> nab.NabRun:
        root = (Path(opts["nab_data"]) if opts["nab_data"]
                else nab.default_data_dir(settings.BASE_DIR))
        try:
            return nab.read_nab_run(root, opts["nab_file"], opts["nab_rows"])
        except (FileNotFoundError, ValueError) as exc:
            raise CommandError(str(exc)) from exc

    def _line(self, text: str) -> None:
        """Write one line to stdout now (it may be a file: progress must not sit in a buffer)."""
        self.stdout.write(text)
        self.stdout.flush()

    def _progress(self, desc: str, *, total: int | None = None, unit: str = "ev",
                  every: float = 5.0, rate: bool = True) -> runner.Progress:
        """A bar on a terminal; a line every ``every`` seconds when stdout is not one."""
        return runner.Progress(desc, total=total, unit=unit, tty=self.stdout.isatty(),
                             write=self._line, every=every, rate=rate)

    def _run(self, twin, runs, mqtt_url, children, credentials, opts):
        runner.wait_for_subscriber(children)
        total = sum(len(r.ts) for r in runs)
        with self._progress("published", total=total) as progress:
            # Never more than ~1.5 s of the subscriber's work between the replay and its
            # commits: amqtt gives up on a subscriber's PUBACK after 5 s.
            window = AckWindow(lambda: runner.subscriber_committed(children))
            published = publish_runs(mqtt_url, twin.slug, runs, rate=opts["rate"],
                                     on_progress=progress.update, window=window,
                                     sense=self._device.sense)
        run_on = self._wait(twin, runs, published, children, opts)
        if self._nab:
            nab_twin, nab_run = self._nab
            with self._progress(f"published {nab_twin.slug}", total=len(nab_run.ts)) as progress:
                window = AckWindow(lambda: runner.subscriber_committed(children))
                nab_published = publish_runs(mqtt_url, nab_twin.slug, [nab_run],
                                             rate=opts["rate"], on_progress=progress.update,
                                             window=window, sense=self._device.sense)
            nab_run_on = self._wait(nab_twin, [nab_run], nab_published, children, opts)
        records = self._plant.records
        summary = runner.summary(twin, runs, published, records, self._plant.answered)
        summary["run_on"] = run_on
        self._print_summary(summary, credentials, opts["port"])
        if self._nab:
            nab_summary = nab.nab_summary(*self._nab)
            nab_summary["executed"] = runner.executed_outcomes(self._nab[0], records)
            nab_summary["run_on"] = nab_run_on
            self._print_nab(nab_summary, *self._nab)
            summary["nab"] = nab_summary
        if opts["summary_json"]:
            Path(opts["summary_json"]).write_text(json.dumps(summary, indent=1, default=_plain))
        if not opts["exit"]:
            self._line("Serving until interrupted (Ctrl-C or SIGTERM).")
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())  # a normal, clean exit
            try:
                while not stop.wait(1.0):
                    children.check()
            except KeyboardInterrupt:
                pass

    def _wait(self, twin, runs, published: int, children, opts) -> int:
        """Wait until ``published`` events of ``twin`` are committed, processing settled and
        every executed proposal judged, running on (``RunOn``) the assets whose verification
        window reaches past their recording; returns the run-on events published."""
        run_on = RunOn(settings.MQTT_URL, twin.slug, runs, sense=self._device.sense)
        try:
            self._settle(twin, published, children, opts,
                         lambda: runner.run_on_verifications(twin, run_on))
        finally:
            run_on.close()
        return run_on.published

    def _settle(self, twin, published: int, children, opts, tick) -> None:
        with self._progress("committed", total=published) as progress:
            committed = runner.wait_for_ingest(twin, published, children, opts["timeout"],
                                             progress)
        if committed < published:
            self.stderr.write(f"only {committed} of {published} events committed in time")
        self._line(f"waiting for detection, simulation and policy to finish on {twin.slug}...")
        with self._progress("detection up to date", total=twin.assets.count(),
                            unit="assets", rate=False) as progress:
            settled = runner.wait_for_quiet(twin, children, opts["timeout"], progress=progress,
                                            tick=tick)
        if not settled:
            self.stderr.write("processing did not settle before --timeout; summary is partial")
            return
        with self._progress("proposals executing or verifying", unit="proposals",
                            rate=False) as progress:
            judged = runner.wait_for_verdicts(twin, children, opts["timeout"], progress, tick)
        if not judged:
            self.stderr.write("verifications still open at --timeout; summary is partial")

    def _print_nab(self, s: dict, twin, run) -> None:
        w = self.stdout.write
        w(f"\n=== second twin {twin.slug}: {run.name}, {len(run.ts)} rows, one metric ===")
        run_on = f" ({s['run_on']} of them run on)" if s.get("run_on") else ""
        w(f"events ingested {s['events']}{run_on}; anomalies opened {len(s['onsets'])} "
          f"(generic default detector at the file's own cadence)")
        for onset in s["onsets"]:
            w(f"  onset {onset:%Y-%m-%d %H:%M} UTC")
        w(f"NAB labelled windows in these rows: {s['windows']}, with an onset inside: "
          f"{s['detected']} (labels read by the summary only)")
        self._print_executed(s["executed"])

    def _print_executed(self, executed: dict) -> None:
        """The executed proposals: how many verified and rolled back, each one and why."""
        w = self.stdout.write
        rows = executed["proposals"]
        w(f"\nexecuted proposals: {len(rows)}; by status {executed['by_status'] or 'none'}; "
          f"by cause {executed['by_cause'] or 'none'}")
        for row in rows:
            params = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in (row["parameters"] or {}).items())
            w(f"  #{row['proposal']:<4} {row['asset']:<14} {row['action']}({params})"
              f" -> {row['status']}: {row['cause']}; {row['why']}")

    def _print_summary(self, s: dict, credentials: dict, port: int) -> None:
        w = self.stdout.write
        w("\n=== OpsTwin demo summary ===")
        run_on = (f" (+ {s['run_on']} run-on events of assets verified past their recording)"
                  if s.get("run_on") else "")
        w(f"events published {s['published']}{run_on}, ingested {s['events']}, "
          f"dead letters {s['dead_letters']}")
        w(f"anomalies by severity: {s['anomalies'] or 'none'}")
        w(f"anomalies by detector: {s['detectors'] or 'none'} (per asset kind: Django admin, "
          f"Detector configs)")
        for a in s["strongest"]:
            shares = ", ".join(f"{m} {c:.2f}" for m, c in a["contributions"])
            w(f"  {a['asset']:<14} {a['detector']:<8} {a['severity']:<8} score {a['score']:.2f} "
              f"on {a['metric']} (contributions: {shares})")
        w(f"simulations run: {s['simulations']}")
        w(f"proposals by decision: {s['proposals_by_decision'] or 'none'}")
        w(f"proposals by status:   {s['proposals_by_status'] or 'none'}")
        self._print_executed(s["executed"])
        w("\nlabel agreement (point-wise; SKAB labels read by the scorer only"
          + (f"; {s['answered_rows']} rows the plant answered with a response left out, "
             "the labels describe the recording)" if s["answered_rows"] else ")"))
        w(f"{'file':<18}{'precision':>10}{'recall':>8}{'F1':>7}{'TP':>7}{'FP':>7}{'FN':>7}")
        for row in [*s["per_file"], s["overall"]]:
            w(f"{row.name:<18}{row.precision:>10.3f}{row.recall:>8.3f}{row.f1:>7.3f}"
              f"{row.tp:>7}{row.fp:>7}{row.fn:>7}")
        w(f"\nDashboard: http://127.0.0.1:{port}/  (API docs /api/docs/, "
          f"manifest /.well-known/aiw-manifest.json)")
        w("Users (role = username): " + ", ".join(f"{u} / {p}" for u, p in credentials.items()))
