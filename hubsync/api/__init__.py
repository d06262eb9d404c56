"""hubsync's HTTP API (issue #13): JSON under /api/v1, served by `hubsync up`.

- `create_app(config, redis, api_key=...)`: the Starlette app (handlers in `app`, bodies in
  `schemas`, auth in `auth`, the OpenAPI document in `openapi`, verify jobs in `jobs`).
- `ApiServer`: uvicorn on 127.0.0.1:8077 (``HUBSYNC_API_ADDRESS``) in a background thread.
- `load_or_create_api_key`: ``HUBSYNC_API_KEY``, or ``HUBSYNC_HOME/api.key`` (0600).
"""

from hubsync.api.app import ROUTES, create_app
from hubsync.api.auth import load_or_create_api_key
from hubsync.api.server import ApiServer, api_address

__all__ = ["ROUTES", "ApiServer", "api_address", "create_app", "load_or_create_api_key"]
