"""The `twin` command line: export, info, validate, ingest, demo.

Heavy libraries (numpy, pygltflib, pyproj, fastapi) are imported inside the commands so
``twin --help`` starts fast. Every expected failure is a :class:`twin.errors.TwinError`,
printed as one line with its exit code; nothing prints a traceback unless TWIN_DEBUG=1.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from twin.errors import TwinError

if TYPE_CHECKING:
    from twin.geometry import CityModel

__all__ = ["app", "main"]

app = typer.Typer(
    name="twin",
    help="CityTwin: CityJSON cities and networks as one live, pickable 3D scene.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

PROGRESS_BYTES = 4 * 1024 * 1024
DEMO_DIR = Path(__file__).resolve().parent / "demo"
DEMO_CITIES = {
    "delft": DEMO_DIR / "delft.city.json",
    "zurich": DEMO_DIR / "zurich_subset_lod2.city.json",
    "helsinki": DEMO_DIR / "helsinki_center.osm.pbf",
}
DEMO_FEEDS = {
    # Simulations of the stand-in networks, replayed 60x faster than real time.
    "delft": [
        DEMO_DIR / "feeds" / "delft_water_net3.jsonl.gz",
        DEMO_DIR / "feeds" / "delft_power_oberrhein.jsonl.gz",
    ],
}
DEMO_CONFIG = DEMO_DIR / "live.toml"
DEMO_NETWORKS = {
    # Real networks from elsewhere, placed on the demo city as labelled stand-ins.
    "delft": [DEMO_DIR / "net3.inp", DEMO_DIR / "mv_oberrhein.json"],
}

LodOpt = Annotated[
    str | None,
    typer.Option("--lod", help="LoD to draw (e.g. 2 or 2.2); falls back to the nearest lower"),
]


def _err(msg: str) -> None:
    typer.echo(msg, err=True)


@contextmanager
def _progress(
    path: Path, label: str, unit: str = "objects"
) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr for files over a few MB; None (no bar) otherwise."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    if size < PROGRESS_BYTES:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn(f"{label} {path.name}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} " + unit),
        TimeRemainingColumn(),
        transient=True,
        console=None,
    ) as bar:
        # A known total from the start: rich renders before the first update, and the
        # count column cannot format an unknown (None) total.
        task = bar.add_task(label, total=size if unit == "bytes" else 1)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _load(path: Path, lod: str | None) -> CityModel:
    from ingest.cityjson import load_cityjson

    with _progress(path, "reading") as progress:
        return load_cityjson(path, lod=lod, progress=progress)


def _print_warnings(model: CityModel, extra: list[str] | None = None) -> None:
    _print_lines([*_model_warnings(model), *(f"warning: {w}" for w in extra or [])])


@app.command()
def export(
    city: Annotated[Path, typer.Argument(help="CityJSON (.json), CityJSONSeq (.jsonl) file")],
    output: Annotated[Path, typer.Option("-o", "--output", help="GLB file to write")],
    lod: LodOpt = None,
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="run the geometric checks and warn")
    ] = True,
) -> None:
    """Export a city model to one pickable GLB (EXT_mesh_features + property table).

    CityJSONSeq files are streamed in chunks, so memory is bounded by the output, not
    the input.
    """
    from ingest.cityjson import iter_cityjson
    from scene.gltf import write_glb_stream

    t0 = time.perf_counter()
    warnings: list[str] = []

    def models() -> Iterator[CityModel]:
        with _progress(city, "exporting", unit="bytes") as progress:
            for model in iter_cityjson(city, lod=lod, progress=progress, wgs84=False):
                warnings.extend(_model_warnings(model))
                if check:
                    warnings.extend(_geometry_warnings(model))
                yield model

    stats = write_glb_stream(models(), output, name=city.name)
    dt = time.perf_counter() - t0
    _print_lines([*warnings, *(f"warning: {w}" for w in stats.warnings)])
    typer.echo(
        f"{output}: {stats.features:,} objects, {stats.triangles:,} triangles, "
        f"{stats.vertices:,} vertices, {stats.primitives} primitives, "
        f"{stats.bytes / 1e6:.1f} MB in {dt:.2f} s"
    )


@app.command()
def tiles(
    cities: Annotated[
        list[Path],
        typer.Argument(help="CityJSON (.json) / CityJSONSeq (.jsonl) files, each with its CRS"),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="tileset folder to write")],
    max_features: Annotated[
        int, typer.Option("--max-features", min=1, help="most objects per leaf tile")
    ] = 2000,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=0, help="local worker processes (default: all cores)"),
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option("--dask", help="run the tile jobs on this Dask scheduler (tcp://host:8786)"),
    ] = None,
    quantize: Annotated[
        bool,
        typer.Option(
            "--quantize/--no-quantize", help="KHR_mesh_quantization positions and normals"
        ),
    ] = True,
    archive: Annotated[
        Path | None, typer.Option("--3tz", help="also pack the tileset into this .3tz archive")
    ] = None,
    lod: LodOpt = None,
) -> None:
    """Write an OGC 3D Tiles 1.1 tileset (tileset.json + GLB tiles) of one or more cities.

    Leaves hold the full geometry, parents LoD1 blocks; every tile carries the object ids
    (EXT_mesh_features + EXT_structural_metadata), like the single-GLB export. Files are
    streamed (memory bounded by tile size) and tiles are built in parallel.
    """
    from scene.tiles import write_3tz, write_tileset

    for city in cities:
        if not city.is_file():
            typer.echo(f"error: {city}: no such file", err=True)
            raise typer.Exit(2)
    t0 = time.perf_counter()
    stats = write_tileset(
        cities,
        output,
        max_features=max_features,
        progress=_Rate("tiles", "tiles"),
        scan_progress=_per_file(cities),
        workers=workers,
        dask=dask,
        quantize=quantize,
        lod=lod,
    )
    _print_lines([f"warning: {w}" for w in stats.warnings])
    dt = time.perf_counter() - t0
    typer.echo(
        f"{output / 'tileset.json'}: {stats.objects:,} objects in {stats.leaves:,} leaf tiles "
        f"({stats.tiles:,} tiles, depth {stats.depth}), {stats.triangles:,} triangles, "
        f"{stats.bytes / 1e6:.1f} MB in {dt:.2f} s ({stats.objects / max(dt, 1e-9):,.0f} "
        "objects/s)"
    )
    if archive is not None:
        size = write_3tz(output, archive)
        typer.echo(f"{archive}: {size / 1e6:.1f} MB (3D Tiles archive)")


def _per_file(files: list[Path]) -> Callable[[int, int], None]:
    """Scan progress, one line per file (``scan 2/3``): a file ends at ``done == total``."""
    n = len(files)
    state: dict[str, Any] = {"k": 1, "rate": _Rate(f"scan 1/{n}", "MB", scale=1e-6)}

    def update(done: int, total: int) -> None:
        state["rate"](done, total)
        if done >= total and state["k"] < n:
            state["k"] += 1
            state["rate"] = _Rate(f"scan {state['k']}/{n}", "MB", scale=1e-6)

    return update


class _Rate:
    """A one-line progress report on stderr: done/total, rate and ETA (twice a second)."""

    def __init__(self, label: str, unit: str, scale: float = 1.0) -> None:
        self.label = label
        self.unit = unit
        self.scale = scale
        self.t0 = time.perf_counter()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self.last < 0.5:
            return
        self.last = now
        dt = max(now - self.t0, 1e-9)
        rate = done / dt
        eta = (total - done) / rate if rate > 0 else 0.0
        d, t = done * self.scale, total * self.scale
        fmt = ",.0f" if self.scale == 1.0 else ",.1f"
        typer.echo(
            f"\r{self.label} {d:{fmt}}/{t:{fmt}} {self.unit} "
            f"({rate * self.scale:,.1f} {self.unit}/s, ETA {int(eta) // 60}:{int(eta) % 60:02d})",
            nl=done >= total,
            err=True,
        )


def _model_warnings(model: CityModel) -> list[str]:
    return [
        f"warning: {w.message}" + (f" (object {w.object_id!r})" if w.object_id else "")
        for w in model.warnings
    ]


def _print_lines(lines: list[str], limit: int = 5) -> None:
    for line in lines[:limit]:
        _err(line)
    if len(lines) > limit:
        _err(f"... and {len(lines) - limit} more warnings (see `twin validate`)")


def _geometry_warnings(model: CityModel) -> list[str]:
    try:
        from ingest.validate import check_geometry
    except ImportError:  # pragma: no cover - validator is part of the package
        return []
    out = []
    for w in check_geometry(model, max_seconds=5.0):
        where = f"object {w.object_id!r}: " if w.object_id else ""
        out.append(f"warning: {where}{w.code} {w.message}")
    return out


@app.command()
def info(
    city: Annotated[Path, typer.Argument(help="CityJSON or CityJSONSeq file")],
    lod: LodOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Describe a city model: version, CRS, counts by type, LoDs, bounding box."""
    model = _load(city, lod)
    bbox = model.bbox()
    wgs = None
    if bbox is not None and model.epsg is not None:
        import numpy as np

        from ingest.crs import to_wgs84

        pts = to_wgs84(np.array([bbox[:3], bbox[3:]]), model.epsg)
        if pts is not None:
            wgs = [float(x) for x in (*pts.min(axis=0), *pts.max(axis=0))]
    data: dict[str, Any] = {
        "file": str(city),
        "version": model.version,
        "crs": model.crs,
        "epsg": model.epsg,
        "objects": len(model.twin),
        "objects_with_geometry": len(model.feature_ids),
        "counts_by_type": model.twin.counts_by_type(),
        "lods": model.lods,
        "bbox": list(bbox) if bbox else None,
        "bbox_wgs84": wgs,
        "vertices": int(model.vertices.shape[0]),
        "surfaces": model.n_surfaces,
        "title": model.metadata.get("title"),
        "extensions": sorted(model.extensions),
        "warnings": [w.message for w in model.warnings],
    }
    if as_json:
        import orjson

        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    typer.echo(
        f"{city}: CityJSON {model.version}" + (f" — {data['title']}" if data["title"] else "")
    )
    typer.echo(f"  CRS        {model.crs or 'unknown'}")
    typer.echo(
        f"  objects    {len(model.twin):,} ({len(model.feature_ids):,} with geometry), "
        f"{data['vertices']:,} vertices, {model.n_surfaces:,} surfaces"
    )
    for t, n in data["counts_by_type"].items():
        typer.echo(f"    {t:28s} {n:,}")
    typer.echo(f"  LoDs       {', '.join(model.lods) or '-'}")
    if bbox:
        typer.echo("  bbox       " + ", ".join(f"{x:.3f}" for x in bbox))
    if wgs:
        typer.echo("  bbox WGS84 " + ", ".join(f"{x:.6f}" for x in wgs))
    if model.extensions:
        typer.echo(f"  extensions {', '.join(sorted(model.extensions))}")
    _print_warnings(model)


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="CityJSON / CityJSONSeq files")],
) -> None:
    """List every problem found in each file; exit 1 if there is any."""
    from ingest.validate import format_problem, validate_path

    n_problems = 0
    for f in files:
        report = validate_path(f)
        if report.ok:
            typer.echo(f"{f}: valid")
            continue
        n_problems += len(report.problems)
        typer.echo(f"{f}: {len(report.problems)} problem(s)")
        for p in report.problems:
            typer.echo(f"  {format_problem(p)}")
    if n_problems:
        raise typer.Exit(1)


@app.command()
def upgrade(
    city: Annotated[Path, typer.Argument(help="legacy CityJSON file (0.6 .. 1.1)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="CityJSON 2.0 file to write")],
    digits: Annotated[int, typer.Option(help="decimals kept if a transform must be added")] = 3,
) -> None:
    """Upgrade a legacy CityJSON file to version 2.0 (with cjio)."""
    from ingest.upgrade import upgrade_cityjson

    old = upgrade_cityjson(city, output, digits=digits)
    typer.echo(f"{output}: CityJSON {old} -> 2.0")


DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db", help="store URL: sqlite:///twin.db (default), postgresql://..., memory://"
    ),
]


def _settings(**overrides: Any) -> Any:
    from viewer.settings import Settings

    values = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**values)


def _is_cityjson(path: Path) -> bool:
    """True for CityJSON / CityJSONSeq files (sniffed), False for network formats."""
    name = path.name.lower()
    if not name.endswith((".json", ".jsonl", ".city.json")):
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(65536)
    except OSError:
        return True  # let the CityJSON reader report the unreadable file
    return b"CityJSON" in head or (
        b"pandapowerNet" not in head and b"FeatureCollection" not in head
    )


@app.command()
def ingest(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="CityJSON / CityJSONSeq cities, and networks: EPANET .inp, pandapower .json, "
            "GeoJSON, GeoPackage, OpenStreetMap .osm/.pbf (roads, pipelines and LoD1 buildings)"
        ),
    ],
    db: DbOpt = None,
    lod: LodOpt = None,
    scenario: Annotated[str, typer.Option(help="scenario to load into")] = "base",
    network_id: Annotated[
        str | None,
        typer.Option("--network-id", help="id of the network (default: its kind, e.g. water)"),
    ] = None,
    georef: Annotated[
        str | None,
        typer.Option(
            help="georeference for networks without a CRS: 'origin=x,y,z;scale=s;rotation=deg;"
            "crs=EPSG:n' or a .json/.toml file with those keys"
        ),
    ] = None,
    fit: Annotated[
        bool,
        typer.Option("--fit", help="place a network onto the city's area as a labelled stand-in"),
    ] = False,
    link_distance: Annotated[
        float, typer.Option(help="link buildings to the nearest network node within (m)")
    ] = 150.0,
) -> None:
    """Load cities and networks into the twin store: all-or-nothing per file, idempotent."""
    from twin.store import open_store

    settings = _settings(db=db)
    store = open_store(settings.db)
    t0 = time.perf_counter()
    total = 0
    try:
        # Cities first: networks are placed in the city's CRS and linked to its buildings.
        cities = [f for f in files if _is_cityjson(f)]
        networks = [f for f in files if f not in cities]
        for city in cities:
            t1 = time.perf_counter()
            # The whole file is read and checked before anything is written, and it is
            # written in one transaction, so a bad or interrupted file changes nothing.
            model = _load(city, lod)
            data = city.read_bytes()
            n = store.put_objects(model.twin, scenario=scenario, source=city.name, source_data=data)
            total += n
            dt = time.perf_counter() - t1
            typer.echo(f"{city}: {n:,} objects in {dt:.2f} s ({n / max(dt, 1e-9):,.0f}/s)")
            _print_warnings(model)
        for path in networks:
            total += _ingest_network(store, path, scenario, network_id, georef, fit, link_distance)
    finally:
        store.close()
    dt = time.perf_counter() - t0
    typer.echo(
        f"{settings.db}: {total:,} objects from {len(files)} file(s) in {dt:.2f} s "
        f"({total / max(dt, 1e-9):,.0f} objects/s)"
    )


def _ingest_network(
    store: Any,
    path: Path,
    scenario: str,
    network_id: str | None,
    georef: str | None,
    fit: bool,
    link_distance: float,
) -> int:
    """Read, place, link and store the network(s) of one file; return objects written."""
    from ingest.networks import detect_format, read_network
    from ingest.networks.georef import Georeference
    from ingest.networks.place import city_frame, place_network, store_network

    t1 = time.perf_counter()
    if not path.is_file():
        raise TwinError(f"{path}: no such file")
    fmt = detect_format(path)
    geo = None
    if georef:
        geo = Georeference.load(georef) if Path(georef).is_file() else Georeference.parse(georef)
    options: dict[str, Any] = {}
    if network_id and fmt != "osm":
        options["network_id"] = network_id
    nets = read_network(path, fmt, **options)
    frame = city_frame(store, scenario)
    written = 0
    if fmt == "osm":
        written += _ingest_osm_buildings(store, path, scenario)
        frame = city_frame(store, scenario)
    for net in nets:
        place_network(net, frame, georef=geo, fit=fit)
        n = store_network(store, net, frame, scenario=scenario, link_distance=link_distance)
        written += n
        typer.echo(
            f"{path}: network {net.id!r} ({net.kind}) {net.n_nodes:,} nodes, "
            f"{net.n_edges:,} edges, {len(net.links):,} buildings linked"
            + (" [stand-in placed on the city]" if net.attributes.get("stand_in") else "")
        )
    dt = time.perf_counter() - t1
    typer.echo(f"{path}: {written:,} objects in {dt:.2f} s")
    return written


def _ingest_osm_buildings(store: Any, path: Path, scenario: str) -> int:
    """OSM building footprints, extruded to LoD1, stored as a CityJSON source."""
    import orjson

    from ingest.cityjson import parse_cityjson
    from ingest.networks.osm import read_osm_buildings

    result = read_osm_buildings(path)
    data = orjson.dumps(result.doc)
    name = path.name.split(".")[0] + ".buildings.city.json"
    model = parse_cityjson(data, source=name)
    n = int(store.put_objects(model.twin, scenario=scenario, source=name, source_data=data))
    typer.echo(f"{path}: {n:,} LoD1 buildings from OSM footprints ({result.skipped} skipped)")
    return n


@app.command("osm-buildings")
def osm_buildings(
    source: Annotated[Path, typer.Argument(help="OpenStreetMap .osm.pbf or .osm file")],
    output: Annotated[Path, typer.Option("-o", "--output", help="CityJSON file to write")],
    default_height: Annotated[
        float, typer.Option(help="height (m) of buildings with no height or levels tag")
    ] = 9.0,
) -> None:
    """Extrude OSM building footprints (height / building:levels) to LoD1 CityJSON 2.0."""
    import orjson

    from ingest.cityjson import parse_cityjson
    from ingest.networks.osm import read_osm_buildings

    if not source.is_file():
        raise TwinError(f"{source}: no such file")
    result = read_osm_buildings(source, default_height=default_height)
    data = orjson.dumps(result.doc)
    parse_cityjson(data, source=output.name)  # what we write must read back
    tmp = output.with_name(f".{output.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, output)
    typer.echo(
        f"{output}: {result.count:,} LoD1 buildings ({result.skipped} footprints skipped: "
        "clipped or degenerate)"
    )


HostOpt = Annotated[str | None, typer.Option(help="address to listen on (TWIN_HOST)")]
PortOpt = Annotated[int | None, typer.Option(help="port (TWIN_PORT)")]


def _serve(settings: Any) -> None:
    import uvicorn

    from viewer.app import create_app
    from viewer.bootstrap import bootstrap

    services = bootstrap(settings)
    typer.echo(
        f"CityTwin serving {services.store.count():,} objects from {settings.db} "
        f"on http://{settings.host}:{settings.port}/  (Ctrl-C to stop)"
    )
    try:
        uvicorn.run(
            create_app(services),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            # Open SSE streams never end on their own: give shutdown a bound.
            timeout_graceful_shutdown=5,
        )
    finally:
        if services.participation is not None:
            services.participation.close()
        services.store.close()


FeedOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--feed",
        help="feed URL (repeatable): mqtt://host:port/city/#, replay:FILE?speed=10 "
        "(the HTTP feed POST /api/feeds/{feed}/observations is always on)",
    ),
]
ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", help="TOML/JSON file: id mapping, alert rules, style rules"),
]
BusOpt = Annotated[
    str | None,
    typer.Option("--bus", help="event bus for several workers: nats://..., redis://..."),
]


@app.command()
def serve(
    db: DbOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    feed: FeedOpt = None,
    config: ConfigOpt = None,
    bus: BusOpt = None,
) -> None:
    """Serve the API (and viewer) on a store, with live feeds."""
    _serve(
        _settings(
            db=db,
            host=host,
            port=port,
            feeds=" ".join(feed) if feed else None,
            config=config,
            bus=bus,
        )
    )


@app.command()
def demo(
    city: Annotated[str, typer.Option(help=f"demo city: {', '.join(DEMO_CITIES)}")] = "delft",
    host: HostOpt = None,
    port: PortOpt = None,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="start the server")] = True,
    db: Annotated[Path, typer.Option(help="SQLite file to create (replaced if it exists)")] = Path(
        "out/demo.db"
    ),
    speed: Annotated[
        float, typer.Option(help="replay speed of the demo's simulated feeds (0: no pacing)")
    ] = 60.0,
) -> None:
    """Ingest the bundled demo city into a fresh SQLite file and serve it (no server needed)."""
    from scene.service import SceneCache
    from twin.store import open_store

    path = DEMO_CITIES.get(city)
    if path is None:
        raise TwinError(f"unknown demo city {city!r} (choose: {', '.join(DEMO_CITIES)})")
    db.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    store = open_store(url)
    try:
        if _is_cityjson(path):
            model = _load(path, None)
            n = store.put_objects(model.twin, source=path.name, source_data=path.read_bytes())
        else:
            # An OpenStreetMap city: real buildings, streets and pipelines, co-located.
            n = _ingest_network(store, path, "base", None, None, False, 150.0)
        for net_path in DEMO_NETWORKS.get(city, []):
            n += _ingest_network(store, net_path, "base", None, None, True, 150.0)
        scene = SceneCache(store).get()
    finally:
        store.close()
    typer.echo(
        f"demo city {city}: {n:,} objects -> {db}; scene {len(scene.data) / 1e6:.1f} MB "
        f"({scene.features:,} pickable features)"
    )
    if serve:
        feeds = " ".join(f"replay:{p}?speed={speed:g}" for p in DEMO_FEEDS.get(city, []))
        _serve(
            _settings(
                db=url,
                host=host,
                port=port,
                feeds=feeds or None,
                config=str(DEMO_CONFIG) if feeds else None,
            )
        )


def main() -> None:
    """Entry point: run the CLI, mapping errors to one line and an exit code."""
    try:
        app(standalone_mode=False)
    except TwinError as exc:
        _err(f"error: {exc}")
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _err("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if os.environ.get("TWIN_DEBUG"):
            raise
        _err(f"internal error: {type(exc).__name__}: {exc} (rerun with TWIN_DEBUG=1 for details)")
        sys.exit(70)
