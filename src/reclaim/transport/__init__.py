"""The one HTTP client for Docker-API endpoints (Docker's, and any engine that speaks its API):
unix sockets, TCP with or without TLS, ssh; GETs, requests that change something, streams;
and the one translation of what fails into reclaim's errors. Built on the standard library
alone, and on df's start-up path: `ssl` and `subprocess` are imported only for the endpoints
that need them."""

from __future__ import annotations

from reclaim.transport.client import EngineClient, Stream
from reclaim.transport.endpoint import FORMS, problem
from reclaim.transport.errors import NOT_DOCKER_HINT, not_docker

__all__ = ["FORMS", "NOT_DOCKER_HINT", "EngineClient", "Stream", "not_docker", "problem"]
