"""``mlops``: seed the demo data, ingest a batch through write-audit-publish, inspect history.

Examples::

    mlops seed                                  # 14 days of demo data for every spec
    mlops ingest churn                          # the next day of churn data arrives
    mlops ingest churn --drift covariate_shift  # ... and the world has changed
    mlops ingest demand --fault nulls           # a bad batch: rejected, main unchanged
    mlops ingest churn --file today.csv         # your own file, same audit
    mlops init iris --from iris.csv --target species  # a spec from your data, to review
    mlops log churn
    mlops models churn                          # registered versions, aliases, gate decisions
    mlops ready                                 # a production model for every spec? if not, why
    mlops reproduce churn 3                     # retrain version 3 from its lineage; match?
    mlops mlflow-ui                             # browse the embedded MLflow store
    mlops serve                                 # the inference server on :8080
    mlops traffic churn --drift covariate_shift # simulated clients; labels arrive later
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import sys
from pathlib import Path

from mlops_assets import settings
from mlops_assets.demo.seeding import DEMO_DAYS, DEMO_ROWS, batch_days, seed_demo
from mlops_assets.demo.simulator import DRIFTS, FAULTS, inject_fault, simulate_batch, to_csv_bytes
from mlops_assets.ingest import IngestResult, ingest_batch
from mlops_assets.specs import ModelSpec, load_specs
from mlops_assets.specs.model import get_spec
from mlops_assets.store import StoreError, VersionedStore, open_store


def store_for(spec: ModelSpec) -> VersionedStore:
    return open_store(
        settings.data_backend(), spec.dataset.repository, **settings.store_options_from_env()
    )


def report_to_dagster(result: IngestResult) -> str | None:
    """Record the audit (and the new data version) on the Dagster instance, if there is one.

    The audit appears as the ``ingest_audit`` check of ``<spec>/raw_data`` in the UI; a
    published batch also records an observation whose data version is the new main commit,
    so Dagster knows about the commit at once.
    """
    if settings.Settings.from_env().dagster_home is None:
        return None
    import dagster as dg

    from mlops_assets.defs.data.assets import report_ingest_audit
    from mlops_assets.defs.keys import raw_data_key

    with dg.DagsterInstance.get() as instance:
        report_ingest_audit(instance, result)
    return f"recorded on the Dagster instance as {raw_data_key(result.spec).to_user_string()}"


def report_observation(spec: ModelSpec, commit_id: str) -> None:
    """Tell the Dagster instance (if any) which commit main of ``spec`` is at."""
    if settings.Settings.from_env().dagster_home is None:
        return
    import dagster as dg

    from mlops_assets.defs.data.assets import report_main_commit

    with dg.DagsterInstance.get() as instance:
        report_main_commit(instance, spec.name, commit_id, {"source": "mlops seed"})


def _print_result(result: IngestResult, report: bool) -> int:
    print(f"[{result.spec}] {result.summary()}")
    if report:
        where = report_to_dagster(result)
        if where:
            print(f"[{result.spec}] {where}")
    return 0 if result.published else 2


def cmd_seed(args: argparse.Namespace) -> int:
    specs = [s for s in load_specs() if s.simulator and (not args.spec or s.name in args.spec)]
    end = dt.date.fromisoformat(args.end) if args.end else None
    status = 0
    for spec in specs:
        store = store_for(spec)
        done, rejected = seed_demo(store, spec, args.days, args.rows, args.seed, end)
        for result in rejected:
            status = _print_result(result, args.report)
        head = store.head("main")
        print(f"[{spec.name}] seeded {done} day(s); main is at {head}")
        if args.report:
            report_observation(spec, head)
    return status


def _progress(spec_name: str):
    """A progress line on stderr while a large file is audited (every chunk of rows)."""
    import time

    start = time.monotonic()

    def show(path: str, rows: int, size: int) -> None:
        mb = size / 1e6
        print(
            f"[{spec_name}] auditing {path}: {rows:,} rows checked ({mb:,.1f} MB file, "
            f"{time.monotonic() - start:.0f} s)",
            file=sys.stderr,
            flush=True,
        )

    return show


def cmd_ingest(args: argparse.Namespace) -> int:
    spec = get_spec(args.spec)
    store = store_for(spec)
    meta: dict[str, str] = {}
    if args.file:
        from mlops_assets.ingest import ingest_path

        result = ingest_path(store, spec, args.file, args.name, progress=_progress(spec.name))
        return _print_result(result, args.report)
    else:
        if not spec.simulator:
            raise SystemExit(f"spec {spec.name!r} has no simulator: pass --file PATH")
        days = batch_days(store, spec)
        day = (
            dt.date.fromisoformat(args.date)
            if args.date
            else (days[-1] + dt.timedelta(days=1) if days else dt.date.today())
        )
        df = simulate_batch(spec.simulator, day, rows=args.rows, seed=args.seed, drift=args.drift)
        data = to_csv_bytes(df)
        if args.fault:
            data = inject_fault(df, args.fault, spec.dataset.key, spec.target)
        name = args.name or "-".join(
            x for x in (f"day-{day}", args.drift if args.drift != "none" else "", args.fault) if x
        )
        meta.update(day=str(day), drift=args.drift, fault=args.fault or "none")
    return _print_result(ingest_batch(store, spec, data, name, meta), args.report)


def cmd_init(args: argparse.Namespace) -> int:
    """Write a spec from a sample of the user's file, print what to check and what to run."""
    from mlops_assets.specs.infer import infer_spec, read_sample, verify
    from mlops_assets.specs.model import SPECS_DIR, forget_loaded_specs

    dtypes = {}
    for item in args.dtype or []:
        col, sep, kind = item.rpartition("=")
        if not sep or not col:
            raise ValueError(f"--dtype {item!r}: write it as COLUMN=TYPE, e.g. 'zip code=string'")
        dtypes[col] = kind
    sample, more = read_sample(args.source, args.sample)
    inferred = infer_spec(
        args.name,
        sample,
        args.target,
        str(args.source),
        more_rows=more,
        key=args.key,
        timestamp=args.timestamp,
        task=args.task,
        dtypes=dtypes,
        cap=args.max_categories,
    )
    verify(inferred, sample, str(args.source))
    if args.out:
        out = Path(args.out)
    else:
        specs_dir = settings.Settings.from_env().specs_dir
        folder = Path(specs_dir.split(os.pathsep)[0]) if specs_dir else SPECS_DIR
        out = folder / f"{args.name}.yaml"
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists: pass --force to replace it, or --out another path")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(inferred.yaml(str(args.source)), encoding="utf-8")
    forget_loaded_specs()
    spec = inferred.spec
    print(
        f"[{args.name}] wrote {out}: task {spec['task']}, target {spec['target']!r}, "
        f"{len(spec['features'])} feature(s), key {spec['dataset']['key']!r}, "
        f"date {spec['dataset']['timestamp']!r}, from {inferred.sample_rows} sampled row(s)"
    )
    print(f"[{args.name}] check before ingesting:")
    for i, item in enumerate(inferred.checks, 1):
        print(f"  {i}. {item}")
    print(f"[{args.name}] then: mlops ingest {args.name} --file {args.source}")
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    store = store_for(get_spec(args.spec))
    for c in store.log(args.ref, limit=args.n):
        when = dt.datetime.fromtimestamp(c.creation_date, dt.UTC).isoformat()
        print(f"{c.id[:12]}  {when}  {c.message}  {c.metadata or ''}")
    branches = store.list_branches()
    print("branches: " + ", ".join(f"{b}@{cid[:12]}" for b, cid in sorted(branches.items())))
    return 0


def cmd_ready(args: argparse.Namespace) -> int:
    """Exit 0 if every spec (or the named ones) has a production version; else say why not."""
    from mlops_assets.training.tracking import PRODUCTION, tracking_from_env

    tracking = tracking_from_env()
    tracking.configure()
    missing = []
    for spec in load_specs():
        if args.spec and spec.name not in args.spec:
            continue
        metric = spec.evaluation.metric
        live = tracking.version_by_alias(spec.model_name, PRODUCTION)
        if live is not None:
            tags = live.tags
            threshold = tags.get("mlops.decision_threshold")
            at = f", decision threshold {threshold}" if threshold else ""
            print(
                f"[{spec.name}] production: version {live.version} "
                f"({metric} {tags.get(f'gate.{metric}', '?')} on the holdout{at})"
            )
            continue
        versions = tracking.versions(spec.model_name)
        if not versions:
            why = "no version was registered: training failed before the promotion gate"
        else:
            last = max(versions, key=lambda v: int(v.version))
            reason = last.tags.get("gate.reason", "no gate decision recorded (the gate never ran)")
            why = f"the promotion gate refused version {last.version}: {reason}"
        missing.append(spec.name)
        print(f"[{spec.name}] NO production model: {why}", file=sys.stderr)
    if missing:
        where = f"; the training log is {args.log}" if args.log else ""
        print(
            f"mlops ready: {', '.join(missing)} cannot be served yet (the server answers 503 "
            f"for it){where}. What to do: README, 'When the first start has no model'.",
            file=sys.stderr,
        )
    return 1 if missing else 0


def cmd_models(args: argparse.Namespace) -> int:
    from mlops_assets.training.tracking import tracking_from_env

    spec = get_spec(args.spec)
    tracking = tracking_from_env()
    tracking.configure()
    aliases: dict[str, list[str]] = {}
    for alias in ("production", "challenger", "previous_production"):
        v = tracking.version_by_alias(spec.model_name, alias)
        if v is not None:
            aliases.setdefault(v.version, []).append(alias)
    versions = tracking.versions(spec.model_name)
    if not versions:
        print(
            f"{spec.model_name}: no registered versions yet; materialize {spec.name}/trained_model"
        )
        return 0
    metric = spec.evaluation.metric
    for v in versions:
        t = v.tags
        held = ",".join(aliases.get(v.version, [])) or "-"
        score = t.get(f"gate.{metric}", "?")
        print(
            f"{spec.model_name} v{v.version:<4} {held:<20} "
            f"gate={t.get('gate.decision', 'pending'):<8} {metric}={score:<9} "
            f"commit={t.get('lakefs.commit', '?')[:12]} "
            f"run_hash={t.get('mlops.run_hash', '?')[:12]} "
            f"reproduced={t.get('mlops.reproduced', 'never')}"
        )
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """The audit trail of a model's production alias; with --set-production, a manual move
    (recorded in the trail like every other)."""
    from mlops_assets.training.history import MANUAL, AuditTrail, Entry, audit_repository
    from mlops_assets.training.history import production_drift as moved_outside
    from mlops_assets.training.tracking import PRODUCTION, tracking_from_env

    spec = get_spec(args.spec)
    store = open_store(
        settings.data_backend(),
        audit_repository(spec.dataset.repository),
        **settings.store_options_from_env(),
    )
    trail = AuditTrail(store, spec.model_name)
    tracking = tracking_from_env()
    try:  # the trail is in the store: it prints even when the registry does not answer
        tracking.configure()
        live = tracking.version_by_alias(spec.model_name, PRODUCTION)
        current, registry_down = (live.version if live is not None else None), ""
    except RuntimeError as err:
        if args.set_production:
            raise
        current, registry_down = None, str(err)
    if args.set_production:
        if not args.reason:
            raise ValueError("--set-production needs --reason: the audit trail records why")
        target = tracking.version(spec.model_name, args.set_production).version
        tracking.promote(spec.model_name, target)
        _, commit = trail.append(
            Entry(
                spec.model_name, MANUAL, current, target, "cli", args.reason,
                actor=settings.Settings.from_env().commit_author,
            )
        )  # fmt: skip
        moved = f"{current or 'none'} -> {target}"
        print(f"[{spec.name}] production moved {moved} (commit {commit[:12]})")
        current = target
    entries = trail.entries()
    if args.json:
        import json

        print(json.dumps([dataclasses.asdict(e) for e in entries], indent=1))
        return 0
    print(f"{spec.model_name}: {len(entries)} move(s) of production, in {trail.location()}")
    for e in entries:
        print(e.line())
        if e.evidence:
            print(f"    evidence: {e.evidence_line()}")
    if registry_down:
        print(f"production now: unknown, the registry did not answer: {registry_down}")
    else:
        print(f"production now: {('v' + current) if current else 'none'}")
    warning = None if registry_down else moved_outside(entries, current)
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr)
    problems = trail.append_only_problems()
    for p in problems:
        print(f"TAMPERED: {p}", file=sys.stderr)
    return 4 if problems else 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from mlops_assets.training.reproduce import reproduce
    from mlops_assets.training.tracking import tracking_from_env

    spec = get_spec(args.spec)
    tracking = tracking_from_env()
    tracking.configure()
    result = reproduce(tracking, spec, args.version, store_for(spec))
    print(result.summary())
    return 0 if result.matched else 3


def cmd_mlflow_ui(args: argparse.Namespace) -> int:
    uri, artifacts = settings.embedded_tracking()
    if settings.tracking_uri():
        raise ValueError(
            f"MLFLOW_TRACKING_URI={settings.tracking_uri()} is set: open that server's UI instead"
        )
    cmd = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        uri,
        "--default-artifact-root",
        artifacts.as_uri(),
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        "1",
    ]
    print(f"MLflow UI for the embedded store {uri} on http://{args.host}:{args.port}")
    os.execv(cmd[0], cmd)
    return 0  # pragma: no cover - execv does not return


def cmd_serve(args: argparse.Namespace) -> int:
    from mlops_assets.serving.main import serve

    serve(args.host, args.port, args.poll_seconds)
    return 0


def cmd_traffic(args: argparse.Namespace) -> int:
    import time

    from mlops_assets.demo.traffic import send_traffic
    from mlops_assets.monitoring.labels import commit_labels, labels_repository

    spec = get_spec(args.spec)
    url = args.url or settings.Settings.from_env().serving_base_url
    day = dt.date.fromisoformat(args.date) if args.date else dt.date.today()
    result = send_traffic(
        url, spec, day, rows=args.rows, batch=args.batch, drift=args.drift, seed=args.seed
    )
    served = ", ".join(f"v{v}: {n}" for v, n in sorted(result.versions.items())) or "nothing"
    print(
        f"[{spec.name}] {result.requests} request(s) to {url}: {result.rows} row(s) answered "
        f"({served}); {len(result.errors)} error(s)"
    )
    for e in result.errors[:5]:
        print(f"[{spec.name}]   {e}")
    if args.labels_after < 0:
        print(f"[{spec.name}] labels withheld (--labels-after < 0)")
        return 0 if not result.errors else 1
    time.sleep(args.labels_after)
    store = open_store(
        settings.data_backend(), labels_repository(spec), **settings.store_options_from_env()
    )
    commit = commit_labels(store, spec, result.labels)
    print(
        f"[{spec.name}] {len(result.labels)} label(s) delivered to "
        f"{labels_repository(spec)} at {commit or 'no commit'}"
    )
    return 0 if not result.errors else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--no-report",
        dest="report",
        action="store_false",
        help="do not record audits on the Dagster instance ($DAGSTER_HOME)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    seed = sub.add_parser("seed", help="ingest N days of demo data for every spec (idempotent)")
    seed.add_argument("--days", type=int, default=DEMO_DAYS)
    seed.add_argument("--rows", type=int, default=DEMO_ROWS, help="rows per day")
    seed.add_argument("--seed", type=int, default=0)
    seed.add_argument("--end", help="last day, YYYY-MM-DD (default: yesterday)")
    seed.add_argument("--spec", action="append", help="only this spec (repeatable)")
    seed.set_defaults(fn=cmd_seed)

    ingest = sub.add_parser("ingest", help="commit one batch through write-audit-publish")
    ingest.add_argument("spec", help="model spec name, e.g. churn")
    ingest.add_argument(
        "--file",
        help="a CSV or Parquet file, or a folder of them, to ingest instead of simulated data "
        "(columns in any order; large files are audited in chunks)",
    )
    ingest.add_argument("--name", help="batch name (default: day-<date>[-drift][-fault])")
    ingest.add_argument("--date", help="simulated day, YYYY-MM-DD (default: the next day)")
    ingest.add_argument("--rows", type=int, default=400)
    ingest.add_argument("--seed", type=int, default=0)
    ingest.add_argument("--drift", choices=DRIFTS, default="none")
    ingest.add_argument("--fault", choices=FAULTS, help="make a batch that breaks one rule")
    ingest.set_defaults(fn=cmd_ingest)

    init = sub.add_parser(
        "init", help="write a model spec from a sample of your CSV or Parquet data, to review"
    )
    init.add_argument("name", help="the spec's name, lower_snake_case, e.g. breast_cancer")
    init.add_argument(
        "--from", dest="source", required=True, help="a CSV or Parquet file, or a folder of them"
    )
    init.add_argument("--target", required=True, help="the column to predict")
    init.add_argument("--key", help="the column that identifies a row (default: guessed)")
    init.add_argument("--timestamp", help="the YYYY-MM-DD event-date column (default: guessed)")
    init.add_argument(
        "--task", choices=("classification", "multiclass", "regression"), help="default: guessed"
    )
    init.add_argument(
        "--dtype",
        action="append",
        metavar="COLUMN=TYPE",
        help="settle a column's dtype (int, float, string, category, date); repeatable",
    )
    init.add_argument("--sample", type=int, default=100_000, help="rows to learn the rules from")
    init.add_argument(
        "--max-categories",
        type=int,
        default=50,
        help="distinct values up to which a text column is a category",
    )
    init.add_argument("--out", help="where to write the spec (default: the specs folder)")
    init.add_argument("--force", action="store_true", help="replace an existing spec file")
    init.set_defaults(fn=cmd_init)

    log = sub.add_parser("log", help="commits of a spec's repository, newest first")
    log.add_argument("spec")
    log.add_argument("--ref", default="main")
    log.add_argument("-n", type=int, default=20)
    log.set_defaults(fn=cmd_log)

    ready = sub.add_parser(
        "ready", help="is there a production model for every spec? exit 1 and why if not"
    )
    ready.add_argument("--spec", action="append", help="only this spec (repeatable)")
    ready.add_argument("--log", help="a training log to point at when a model is missing")
    ready.set_defaults(fn=cmd_ready)

    models = sub.add_parser("models", help="registered versions of a spec's model")
    models.add_argument("spec")
    models.set_defaults(fn=cmd_models)

    hist = sub.add_parser(
        "history", help="who moved a model's production alias, when, from which version, why"
    )
    hist.add_argument("spec")
    hist.add_argument("--json", action="store_true", help="the entries as JSON")
    hist.add_argument(
        "--set-production", metavar="VERSION", help="move production by hand (recorded)"
    )
    hist.add_argument("--reason", help="why (required with --set-production)")
    hist.set_defaults(fn=cmd_history)

    repro = sub.add_parser(
        "reproduce", help="retrain a registered version from its lineage; exit 0 if it matched"
    )
    repro.add_argument("spec")
    repro.add_argument("version", help="registered model version, e.g. 3")
    repro.set_defaults(fn=cmd_reproduce)

    ui = sub.add_parser("mlflow-ui", help="serve the MLflow UI over the embedded store")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(fn=cmd_mlflow_ui)

    srv = sub.add_parser("serve", help="the inference server for every model (production alias)")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8080)
    srv.add_argument(
        "--poll-seconds",
        type=float,
        default=2.0,
        help="how often to reconcile to the registry's desired state (alias, rollout tag)",
    )
    srv.set_defaults(fn=cmd_serve)

    traffic = sub.add_parser(
        "traffic", help="send simulated requests to the server; deliver their labels later"
    )
    traffic.add_argument("spec")
    traffic.add_argument("--url", help="server (default: MLOPS_SERVING_URL or :8080)")
    traffic.add_argument("--rows", type=int, default=500, help="rows to send")
    traffic.add_argument("--batch", type=int, default=10, help="rows per request")
    traffic.add_argument("--drift", choices=DRIFTS, default="none")
    traffic.add_argument("--date", help="simulated day, YYYY-MM-DD (default: today)")
    traffic.add_argument("--seed", type=int, default=1)
    traffic.add_argument(
        "--labels-after",
        type=float,
        default=0.0,
        help="seconds until the true outcomes arrive (negative: never)",
    )
    traffic.set_defaults(fn=cmd_traffic)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (StoreError, ValueError, KeyError, FileExistsError, OSError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"mlops {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
