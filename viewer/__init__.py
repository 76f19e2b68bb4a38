"""Entry points: the `twin` CLI, the FastAPI app and (later) the browser client."""

__all__: list[str] = []
