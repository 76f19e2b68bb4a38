"""Property-based run of the OpenAPI document against the app (schemathesis).

Zero server errors and zero responses that break the documented schema, with a bounded
number of examples per operation, against a real SQLite store holding a real city.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from ingest.cityjson import load_cityjson
from ingest.networks.epanet import read_epanet
from ingest.networks.georef import Georeference
from ingest.networks.place import city_frame, place_network, store_network
from viewer.app import create_app
from viewer.bootstrap import bootstrap
from viewer.cli import DEMO_DIR
from viewer.settings import Settings


@pytest.fixture(scope="module")
def api_schema(cityjson_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    db = tmp_path_factory.mktemp("st") / "twin.db"
    services = bootstrap(Settings(db=f"sqlite:///{db}", tokens="eng:engineer,plan:planner"))
    src = cityjson_dir / "small" / "rotterdam_subset.city.json"
    services.store.put_objects(
        load_cityjson(src).twin, source=src.name, source_data=src.read_bytes()
    )
    # A network too, so the network routes answer with content, not only 404s.
    net = read_epanet(DEMO_DIR / "net3.inp")
    frame = city_frame(services.store)
    assert frame.bbox is not None
    bbox = net.bbox()
    assert bbox is not None
    geo = Georeference.fit((bbox[0], bbox[1], bbox[3], bbox[4]), frame.bbox, crs="EPSG:28992")
    place_network(net, frame, georef=geo)
    store_network(services.store, net, frame)
    app = create_app(services)
    # The SSE stream never ends by design; it has its own tests (tests/viewer/test_stream.py).
    yield schemathesis.openapi.from_asgi("/api/openapi.json", app).exclude(path="/api/stream/sse")
    services.store.close()


CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)


def test_api_conforms_to_its_openapi_document(api_schema: Any) -> None:
    # Driven through plain hypothesis: the schemathesis pytest plugin does not run on
    # this pytest version. Every operation gets a bounded number of generated cases.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            headers = {"Authorization": "Bearer eng"} if case.method.upper() != "GET" else None
            response = case.call(headers=headers)
            case.validate_response(response, checks=CHECKS)

        check()
