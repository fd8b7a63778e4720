"""`embedlake`: the command line. Parses, validates cheaply, then hands over to flows and tasks.

Exit status: 0 when the command did its job (a run with bad files recorded included); 1 with a
one-line reason otherwise (a traceback only with --debug); 2 for a malformed command line.
Heavy imports (torch, timm, prefect) happen inside the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from embedlake.tasks.params import Flag
    from embedlake.tasks.run_context import RunSummary

__all__ = ["main", "one_line"]

_BANNER = "!" * 78


class CliError(Exception):
    """A failure the user can act on; printed as one line."""


class CommandLineError(CliError):
    """An option's value RunParams refuses: a malformed command line (exit 2), in one line."""


def _add_lake(parser: argparse.ArgumentParser, help_text: str | None = None) -> None:
    """--lake for a command that reads a lake: run's declaration, with its default filled in."""
    from embedlake.tasks.params import RunParams, default_lake

    lake = RunParams.model_fields["lake"]
    parser.add_argument("--lake", default=default_lake(), help=help_text or lake.description)


_DEBUG_HELP = "show tracebacks and Prefect's logs (accepted anywhere on the line)"
_MEMORY = re.compile(r"\d+(\.\d+)?\s*(%|[KMGT]i?B)", re.IGNORECASE)


def _add_run_options(
    parser: argparse.ArgumentParser, *, source: bool = True, only: tuple[str, ...] = ()
) -> None:
    """The options RunParams declares (those in `only`, when given), with its help; a default
    is left to RunParams (SUPPRESS: an option not given is not passed on)."""
    from pydantic_core import PydanticUndefined

    from embedlake.tasks.params import RunParams, run_options

    if source:
        parser.add_argument("source", help=RunParams.model_fields["source"].description)
    for name, field, flag in run_options():
        if only and name not in only:
            continue
        default = field.default  # a list's (a factory's) is said in the help, if at all
        shown = default not in (None, PydanticUndefined) and not isinstance(default, bool)
        help_text = (field.description or "") + (f" (default: {default})" if shown else "")
        parser.add_argument(
            flag.name, dest=name, default=argparse.SUPPRESS, help=help_text, **_kind(field, flag)
        )


def _kind(field: FieldInfo, flag: Flag) -> dict[str, Any]:
    """argparse's action, type, choices and metavar for a RunParams field."""
    annotation = field.annotation
    if annotation is bool:
        return {"action": "store_true"}
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        return {"choices": choices, "metavar": "|".join(choices)}
    if flag.repeatable:
        return {"action": "append", "metavar": flag.metavar}
    base = next(t for t in get_args(annotation) or (annotation,) if t is not type(None))
    return {"type": base, "metavar": flag.metavar}


def _add_k(parser: argparse.ArgumentParser, help_text: str) -> None:
    # similar's and nearest's --k; `_check_k_and_output` is its one check
    parser.add_argument("--k", type=int, default=10, help=help_text)


def _add_query_options(parser: argparse.ArgumentParser) -> None:
    _add_lake(parser)
    _add_output(parser)
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="stop the query after this long (default: 300; 0 = no limit)",
    )
    parser.add_argument(
        "--memory-limit",
        default="50%",
        metavar="SIZE",
        help="DuckDB's memory limit, e.g. 4GB or 25%% of RAM (default: 50%%); past it, what "
        "DuckDB cannot spill to disk fails with its out-of-memory error",
    )


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default="table", choices=["table", "csv", "json", "parquet"])
    parser.add_argument("--output", help="write the result to this file (required for parquet)")


def _add_similar(sub: argparse._SubParsersAction) -> None:
    similar = sub.add_parser(
        "similar", help="the lake's images nearest to images from outside it (writes nothing)"
    )
    similar.add_argument(
        "queries",
        nargs="+",
        metavar="FILE_OR_URL",
        help="query images: files, or http(s)://, s3://, gs://, az://, abfs:// URLs",
    )
    _add_lake(similar)
    similar.add_argument(
        "--backbone",
        action="append",
        dest="backbones",
        metavar="NAME",
        help="repeatable (default: every backbone the lake holds)",
    )
    similar.add_argument(
        "--weights",
        help="the weights whose embeddings to search, where the lake holds several "
        "(default: those of the latest finished run); same forms as `run --weights`",
    )
    _add_k(similar, "images per query and backbone")
    _add_output(similar)
    similar.add_argument(
        "--pillow-plugin",
        action="append",
        dest="pillow_plugins",
        default=[],
        metavar="MODULE",
        help="import MODULE (or call MODULE:FUNCTION) to register more formats; repeatable. "
        "Plugins a lake's runs recorded are never loaded: where you name fewer, a query that "
        "decodes without them is answered (with a note), one that does not is refused",
    )
    similar.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="decompression-bomb limit per query image (default: run's default; never the "
        "lake's recorded value)",
    )
    similar.add_argument(
        "--decode-timeout",
        type=float,
        default=None,
        help="seconds a query image may take to download, and again to decode (default: 30, "
        "as for run); a URL is read up to 256 MiB",
    )
    similar.add_argument(
        "--allow-private-urls",
        action="store_true",
        help="fetch http(s) URLs whose host is a loopback, private or link-local address "
        "(refused by default, redirects included)",
    )


def _add_nearest(sub: argparse._SubParsersAction) -> None:
    near = sub.add_parser(
        "nearest",
        help="a stored image's nearest images (the group's ANN index when it has one; "
        "writes nothing)",
    )
    near.add_argument("image_id", help="an image_id of the lake (`images.image_id`)")
    near.add_argument("--backbone", required=True, help="whose embeddings to compare")
    _add_lake(near)
    _add_k(near, "how many images")
    _add_output(near)


def _add_review(sub: argparse._SubParsersAction) -> None:
    review = sub.add_parser(
        "review", help="record a decision about images in the lake's reviews table"
    )
    review.add_argument("image_ids", nargs="+", metavar="IMAGE_ID", help="`images.image_id`")
    decision = review.add_mutually_exclusive_group(required=True)
    decision.add_argument("--keep", action="store_true", help="keep (undoes an exclude)")
    decision.add_argument("--exclude", action="store_true", help="leave out of `export`")
    decision.add_argument("--relabel", metavar="VALUE", help="the image's right label")
    decision.add_argument("--tag", metavar="VALUE", help="a tag for the image")
    review.add_argument(
        "--label-column",
        metavar="COL",
        help="the label column a --relabel corrects (default: label)",
    )
    review.add_argument("--note", metavar="TEXT", help="why")
    review.add_argument("--who", help="who decided (default: the OS user)")
    _add_lake(review)


def _add_export(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser(
        "export",
        help="write the curated collection (current images minus excluded ones, with reviewed "
        "labels) for a training job",
    )
    export.add_argument("--format", default="parquet", choices=["parquet", "csv"])
    export.add_argument("--output", required=True, metavar="FILE", help="outside the lake")
    export.add_argument(
        "--label-column",
        default="label",
        metavar="COL",
        help="the label column whose reviewed labels go in reviewed_label (default: label)",
    )
    _add_lake(export)


def _add_explore(sub: argparse._SubParsersAction) -> None:
    explore = sub.add_parser(
        "explore",
        help="the local explorer: the map, filters, images and review queues in a browser "
        "(read-only but for reviews)",
    )
    _add_lake(explore)
    explore.add_argument("--port", type=int, default=8765, help="default: 8765; 0 = any free port")
    explore.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1); any other host needs the random token "
        "printed in the URL",
    )
    explore.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="stop a query (a filter) after this long (default: 60)",
    )
    explore.add_argument(
        "--memory-limit",
        default="384MB",
        metavar="SIZE",
        help="DuckDB's memory limit per connection (two at most; default: 384MB)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embedlake",
        description="Turn image collections into a queryable lake of embeddings and metadata.",
    )
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="inventory and embed a collection into the lake")
    _add_run_options(run)

    sql = sub.add_parser("sql", help="run read-only SQL against the lake's catalog")
    sql.add_argument("query", help="SQL (SELECT statements only)")
    _add_query_options(sql)

    queries = sub.add_parser("queries", help="list the named analysis queries")
    queries.add_argument("--json", action="store_true", help="print JSON")
    _add_lake(
        queries,
        "accepted like every lake command's and checked to be a folder or a URL embedlake "
        "can open; the list itself ships with embedlake and is the same for every lake",
    )

    query = sub.add_parser("query", help="run a named analysis query (read-only)")
    query.add_argument("name", help="see `embedlake queries`")
    query.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    _add_query_options(query)

    _add_similar(sub)
    _add_nearest(sub)
    _add_review(sub)
    _add_export(sub)
    _add_explore(sub)

    report = sub.add_parser("report", help="(re)build a run's HTML report from the lake")
    _add_lake(report)
    report.add_argument("--run", dest="run_id", help="a run id (default: the latest finished run)")
    report.add_argument(
        "--color-by", default="label", help="sidecar column the PCA plots are coloured by"
    )
    # `run --label-column` names the columns probed; report's colouring had the same flag (0.3)
    report.add_argument("--label-column", dest="old_color_by", help=argparse.SUPPRESS)
    report.add_argument(
        "--source",
        help="folder or URL to read thumbnails from (default: none; never the one the lake names)",
    )

    serve = sub.add_parser("serve", help="run on a schedule as a Prefect deployment")
    when = serve.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='a cron expression, e.g. "0 2 * * *"')
    when.add_argument("--interval", type=float, help="seconds between runs")
    serve.add_argument("--name", default="embedlake", help="deployment name")
    _add_run_options(serve)

    reindex = sub.add_parser(
        "reindex", help="rebuild the neighbour graph, its index and the catalog from the Parquet"
    )
    _add_lake(reindex)
    _add_run_options(reindex, source=False, only=("device", "runner"))

    bb = sub.add_parser("backbones", help="describe the registered backbones")
    bb.add_argument("names", nargs="*", metavar="NAME", help="default: mobilenet_v1 and xception")
    bb.add_argument("--json", action="store_true", help="print JSON")
    bb.add_argument("--all", action="store_true", help="every registered variant")

    demo = sub.add_parser(
        "demo", help="build the bundled sample collection and run the pipeline on it"
    )
    _add_run_options(demo, source=False)
    for command in sub.choices.values():
        # SUPPRESS: a subcommand without --debug keeps the value given before it
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_prefect(args.debug)
    commands = {
        "run": _cmd_run,
        "sql": _cmd_sql,
        "query": _cmd_query,
        "queries": _cmd_queries,
        "backbones": _cmd_backbones,
        "demo": _cmd_demo,
        "report": _cmd_report,
        "similar": _cmd_similar,
        "nearest": _cmd_nearest,
        "serve": _cmd_serve,
        "reindex": _cmd_reindex,
        "review": _cmd_review,
        "export": _cmd_export,
        "explore": _cmd_explore,
    }
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("embedlake: interrupted", file=sys.stderr)
        return 130
    except CommandLineError as exc:
        print(f"embedlake: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if args.debug:
            raise
        print(f"embedlake: error: {one_line(exc)}", file=sys.stderr)
        return 1


def one_line(exc: BaseException) -> str:
    """What went wrong, in one line: the message's first line; for an error DuckDB passes on from
    Python code (a registered filesystem's), which quotes the whole traceback and may follow it
    with the query's line and a caret, the traceback's exception line."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].startswith("Traceback (most recent call last)"):
        raised = [line for line in lines if _EXCEPTION_LINE.match(line)]
        return raised[-1] if raised else lines[-1]
    return lines[0]


# a traceback's last line: `FileNotFoundError: ...`, `fsspec.x.SomeError: ...`
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\b.*")


def _configure_prefect(debug: bool) -> None:
    # Prefect's console lines (and its tracebacks of failed tasks) would drown the progress
    # display and the one-line error; they all still reach the Prefect API and its UI.
    if not debug:
        for handler in ("", "_FLOW_RUNS", "_TASK_RUNS"):
            os.environ.setdefault(f"PREFECT_LOGGING_HANDLERS_CONSOLE{handler}_LEVEL", "CRITICAL")


def _run_params(args: argparse.Namespace, source: str, **overrides: Any):
    """RunParams from the options given (RunParams' defaults for the rest), validated, with the
    source, lake, sidecar and backbones resolved here before Prefect starts."""
    from pydantic import ValidationError

    from embedlake.tasks.backbones import resolve_backbone
    from embedlake.tasks.lake import Lake
    from embedlake.tasks.params import RunParams, explain, run_options
    from embedlake.tasks.sources import open_source
    from embedlake.tasks.weights import parse_weights_spec

    given = {name: getattr(args, name) for name, _, _ in run_options() if name in args}
    opened = open_source(source)  # a local folder resolved, or a URL checked to be a folder
    try:
        params = RunParams(**{**given, **overrides, "source": str(opened)})
    except ValidationError as exc:
        raise CommandLineError(explain(exc)) from exc
    names = [resolve_backbone(n).name for n in params.backbones]
    parse_weights_spec(params.weights, names)  # fail on a bad --weights before Prefect starts
    if params.metadata and not Path(params.metadata).is_file():
        raise CliError(f"--metadata {params.metadata}: no such file")
    resolved = {
        "lake": Lake.at(params.lake).url,  # a folder resolved, or a URL whose backend is installed
        "metadata": str(Path(params.metadata).resolve()) if params.metadata else None,
        "backbones": names,
    }
    # validated above: these are the same values, resolved (the source is not validated twice,
    # its escaping is not idempotent)
    return params.model_copy(update=resolved)


def _run_option(args: argparse.Namespace, name: str) -> Any:
    """One run option of a command that takes only it: given and validated, else the default."""
    from pydantic import ValidationError

    from embedlake.tasks.params import RunParams, check_option, explain

    if name not in args:
        return RunParams.model_fields[name].get_default(call_default_factory=True)
    try:
        return check_option(name, getattr(args, name))
    except ValidationError as exc:
        raise CommandLineError(explain(exc)) from exc


def _execute(params) -> RunSummary:
    from embedlake.flows.pipeline import with_runner

    return with_runner(params.runner)(params, progress=True)


def _print_summary(summary: RunSummary) -> None:
    errors = ", ".join(f"{code} {n}" for code, n in summary.error_counts.items()) or "none"
    rate = summary.images_per_second
    lines = [
        f"run {summary.run_id} finished in {summary.seconds:.1f} s on "
        f"{summary.device} ({summary.precision})",
        f"  files {summary.n_files}: ok {summary.n_ok}, error {summary.n_error} ({errors})",
        f"  images {summary.n_unique_images} distinct: embedded {summary.n_embedded}, "
        f"already in the lake {summary.n_skipped}" + (f", {rate:.1f} images/s" if rate else ""),
    ]
    if summary.n_metadata_rows is not None:
        lines.append(
            f"  metadata rows {summary.n_metadata_rows}: without a file "
            f"{summary.n_metadata_without_file}; files without a row "
            f"{summary.n_files_without_metadata}"
        )
    lines.append(f"  lake {summary.lake}")
    if summary.report:
        lines.append(f"  report {summary.report}")
    print("\n".join(lines))


def _cmd_run(args: argparse.Namespace) -> int:
    params = _run_params(args, args.source)
    summary = _execute(params)
    _print_summary(summary)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from embedlake.data.sample import build_sample_collection

    collection = build_sample_collection()
    print(f"sample collection: {collection}")
    sidecar = {"metadata": str(collection / "metadata.csv"), "key": "path"}
    params = _run_params(args, str(collection / "images"), **sidecar)
    # only the demo falls back to random weights, and only from the default, ImageNet's
    params = params.model_copy(update={"random_fallback": params.weights == "imagenet"})
    summary = _execute(params)
    if summary.weights_random and summary.message:
        print(f"{_BANNER}\n{summary.message}\n{_BANNER}", file=sys.stderr)
    _print_summary(summary)
    from embedlake.tasks.lake import Lake

    lake = summary.lake
    latest = Lake.at(lake).local_dir / "reports" / "latest"
    print(
        "\ntry:\n"
        f'  embedlake sql --lake {lake} "SELECT m.label, count(*) AS images '
        'FROM images i JOIN metadata m USING (path) GROUP BY ALL ORDER BY images DESC"\n'
        f"  embedlake query neighbors --lake {lake} --param path=cat/chelsea.jpg --param k=3\n"
        f"  embedlake queries    # the other named queries; the report: {latest}/\n"
        f"  embedlake explore --lake {lake}    # the map, image pages and review queues in "
        "your browser (http://127.0.0.1:8765/)"
    )
    return 0


def _cmd_backbones(args: argparse.Namespace) -> int:
    from embedlake.tasks.backbones import (
        DEFAULT_BACKBONES,
        all_backbone_names,
        describe,
        resolve_backbone,
    )

    names = all_backbone_names() if args.all else (args.names or list(DEFAULT_BACKBONES))
    rows = [describe(resolve_backbone(name)) for name in names]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = (
        f"{'name':<22}{'params':>12}{'MACs':>16}{'dim':>6}{'input':>7}  preprocessing / pretrained"
    )
    print(header)
    for row in rows:
        pre = row["preprocessing"]
        print(
            f"{row['name']:<22}{row['params']:>12,}{row['macs']:>16,}{row['embedding_dim']:>6}"
            f"{row['input_size']:>7}  {pre['interpolation']}, crop {pre['crop_pct']}, "
            f"mean {pre['mean'][0]} std {pre['std'][0]}; {row['pretrained_tag']}"
        )
    return 0


@contextmanager
def _limited_connection(args: argparse.Namespace) -> Iterator[Any]:
    """A read-only connection under --memory-limit, whose queries stop after --timeout."""
    import duckdb

    from embedlake.tasks.catalog import connect_read_only
    from embedlake.tasks.queries import QueryTimeout, time_limit

    if args.format == "parquet" and not args.output:
        raise CliError("--format parquet needs --output FILE")
    if args.timeout < 0:
        raise CliError("--timeout must be 0 (no limit) or more seconds")
    if not _MEMORY.fullmatch(args.memory_limit):
        raise CliError(f"--memory-limit {args.memory_limit}: expected e.g. 4GB, 512MiB or 50%")
    with connect_read_only(args.lake, memory_limit=args.memory_limit) as con:
        try:
            with time_limit(con, args.timeout):
                yield con
        except QueryTimeout as exc:
            raise CliError(f"{exc} (--timeout {args.timeout:g}; 0 for no limit)") from exc
        except duckdb.OutOfMemoryException as exc:
            first = str(exc).strip().splitlines()[0]
            raise CliError(f"{first} (--memory-limit {args.memory_limit})") from exc


def _cmd_sql(args: argparse.Namespace) -> int:
    from embedlake.tasks.catalog import check_read_only
    from embedlake.tasks.render import write_result

    with _limited_connection(args) as con:
        statements = check_read_only(con, args.query)
        for statement in statements[:-1]:
            con.execute(statement)
        # streamed: a result larger than memory is written a batch at a time
        write_result(con.sql(statements[-1]).to_arrow_reader(8192), args.format, args.output)
    return 0


def _cmd_queries(args: argparse.Namespace) -> int:
    from embedlake.tasks.lake import Lake
    from embedlake.tasks.queries import list_queries, load_query

    Lake.at(args.lake)  # a URL whose backend is missing is refused here as everywhere
    found = [load_query(name) for name in list_queries()]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": q.name,
                        "description": q.description,
                        "example": q.example,
                        "params": [vars(p) for p in q.params],
                    }
                    for q in found
                ],
                indent=2,
            )
        )
        return 0
    for q in found:
        print(f"{q.name}: {q.description}")
        for p in q.params:
            default = "NULL" if p.default is None else p.default
            print(f"    --param {p.name}=<{p.type}> (default {default}) {p.help}".rstrip())
        if q.example:
            print(f"    e.g. {q.example}")
    return 0


def _cmd_query(args: argparse.Namespace) -> int:
    from embedlake.tasks.queries import run_query
    from embedlake.tasks.render import write_result

    given = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--param {item!r}: expected KEY=VALUE")
        given[key] = value
    with _limited_connection(args) as con:
        table = run_query(con, args.name, given)
    write_result(table, args.format, args.output)
    return 0


def _check_k_and_output(args: argparse.Namespace) -> None:
    if args.format == "parquet" and not args.output:
        raise CliError("--format parquet needs --output FILE")
    if args.k < 1:
        raise CommandLineError("--k must be at least 1")


def _cmd_similar(args: argparse.Namespace) -> int:
    from embedlake.tasks.render import write_result
    from embedlake.tasks.similar import find_similar

    _check_k_and_output(args)
    limits = {"max_pixels": args.max_pixels, "timeout": args.decode_timeout}
    if any(value is not None and value <= 0 for value in limits.values()):
        raise CliError("--max-pixels and --decode-timeout must be positive")
    result = find_similar(
        args.lake,
        args.queries,
        backbones=args.backbones,
        k=args.k,
        weights=args.weights,
        pillow_plugins=args.pillow_plugins,
        allow_private_urls=args.allow_private_urls,
        **{name: value for name, value in limits.items() if value is not None},
    )
    for note in result.notes:
        print(f"embedlake: note: {note}", file=sys.stderr)
    write_result(result.table, args.format, args.output)
    return 0


def _cmd_nearest(args: argparse.Namespace) -> int:
    from embedlake.tasks.lake import Lake
    from embedlake.tasks.nearest import nearest
    from embedlake.tasks.render import write_result

    _check_k_and_output(args)
    root = Lake.at(args.lake)
    if not root.exists():
        raise CliError(f"no lake at {root}")
    write_result(nearest(root, args.image_id, args.backbone, args.k), args.format, args.output)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from embedlake.tasks.report import build_report

    if args.old_color_by is not None:
        print("note: report --label-column is now --color-by", file=sys.stderr)
        args.color_by = args.old_color_by
    result = build_report(args.lake, args.run_id, color_by=args.color_by, source=args.source)
    print(f"report of run {result['run_id']}: {result['path']} ({result['bytes'] / 1e6:.1f} MB)")
    if result["lake_copy"] != str(Path(result["path"]).parent):
        print(f"  uploaded to {result['lake_copy']}")
    return 0


def _cmd_reindex(args: argparse.Namespace) -> int:
    from embedlake.tasks.lake import Lake

    device = _run_option(args, "device")  # refused before torch is imported
    runner = _run_option(args, "runner")
    root = Lake.at(args.lake)
    if not root.exists():
        raise CliError(f"no lake at {root}")
    from embedlake.tasks.steps import reindex_fn

    written = reindex_fn(root, device, runner)
    print(f"reindexed {root}: " + ", ".join(f"{g} {n} lists" for g, n in written.items()))
    return 0


def _cmd_review(args: argparse.Namespace) -> int:
    from embedlake.tasks.reviews import add_reviews

    kinds = {"relabel": args.relabel, "tag": args.tag, "keep": None, "exclude": None}
    decision = next(k for k in kinds if getattr(args, k) not in (None, False))
    rows = [
        {
            "image_id": image_id,
            "decision": decision,
            "value": kinds[decision],
            "label_column": args.label_column,
            "note": args.note,
            "who": args.who,
        }
        for image_id in args.image_ids
    ]
    written = add_reviews(args.lake, rows, on_wait=lambda m: print(m, file=sys.stderr))
    print(f"recorded {written} review(s): {decision}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from embedlake.tasks.reviews import export_collection

    rows = export_collection(args.lake, args.output, args.format, args.label_column)
    print(f"exported {rows} image(s) to {args.output} ({args.format})")
    return 0


def _cmd_explore(args: argparse.Namespace) -> int:
    from embedlake.tasks.explore import serve

    if not 0 <= args.port <= 65535:
        raise CliError("--port must be 0 to 65535")
    if args.timeout <= 0:
        raise CliError("--timeout must be positive")
    if not _MEMORY.fullmatch(args.memory_limit):
        raise CliError(f"--memory-limit {args.memory_limit}: expected e.g. 4GB, 512MiB or 50%")

    def ready(url: str) -> None:
        print(f"embedlake explore: {url}  (Ctrl-C stops it)", flush=True)

    serve(args.lake, args.host, args.port, args.timeout, args.memory_limit, on_ready=ready)
    print("embedlake explore: stopped", flush=True)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from embedlake.flows.serve import serve

    if args.interval is not None and args.interval <= 0:
        raise CliError("--interval must be positive")
    serve(_run_params(args, args.source), cron=args.cron, interval=args.interval, name=args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
