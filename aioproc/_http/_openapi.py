"""The OpenAPI 3 document served at ``/openapi.json`` (``docs/http.md`` says the same in prose)."""

from __future__ import annotations

from typing import Any

from .. import __version__

__all__ = ["openapi"]


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_ERRORS = {
    "401": _json(_ref("Error"), "no valid bearer token (servers with a token)"),
    "403": _json(_ref("Error"), "a Host that is not served, or a cross-site request"),
}
_ACTION_ERRORS = {
    **_ERRORS,
    "404": _json(_ref("Error"), "no such service"),
    "503": _json(_ref("Error"), "the supervisor is shutting down"),
}

_SERVICE = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "state": {
            "type": "string",
            "enum": [
                "stopped",
                "waiting",
                "starting",
                "running",
                "backoff",
                "stopping",
                "exited",
                "fatal",
            ],
        },
        "pid": {"type": ["integer", "null"]},
        "uptime": {"type": ["number", "null"], "description": "seconds since it started"},
        "restarts": {"type": "integer"},
        "last_exit": {
            "type": ["object", "null"],
            "properties": {
                "code": {"type": ["integer", "null"]},
                "signal": {"type": ["string", "null"]},
                "text": {"type": "string"},
            },
        },
        "ready": {"type": "boolean"},
        "ready_check": {"type": ["string", "null"]},
        "reason": {"type": ["string", "null"], "description": "why it is in its state"},
        "wanted": {
            "type": "boolean",
            "description": "running and ready, or completed as expected",
        },
        "logs_kept": {
            "type": "boolean",
            "description": 'false for output = "inherit": its lines are not kept',
        },
        "cpu_seconds": {
            "type": ["number", "null"],
            "description": "CPU time of its process group (reaped children included)",
        },
        "rss_bytes": {
            "type": ["integer", "null"],
            "description": "resident memory summed over its process group",
        },
    },
}


def openapi() -> dict[str, Any]:
    ok = _json({"type": "object"}, "done")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "aioproc supervisor",
            "version": __version__,
            "description": "The HTTP face of a running aioproc supervisor (docs/http.md).",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Service": _SERVICE,
                "Error": {
                    "type": "object",
                    "properties": {
                        "ok": {"const": False},
                        "error": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
                "LogLine": {
                    "type": "object",
                    "properties": {
                        "service": {"type": "string"},
                        "time": {"type": "number", "description": "Unix time it was read"},
                        "text": {"type": "string"},
                    },
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/": {
                "get": {
                    "summary": "The status page (no data; never needs the token)",
                    "security": [],
                    "responses": {"200": {"description": "HTML"}},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The supervisor is alive",
                    "responses": {"200": ok, **_ERRORS},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Every essential service is ready (or completed as expected)",
                    "responses": {
                        "200": ok,
                        "503": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "not_ready": {"type": "array", "items": {"type": "string"}}
                                },
                            },
                            "the essential services that are not",
                        ),
                        **_ERRORS,
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus text format",
                    "responses": {"200": {"description": "text/plain; version=0.0.4"}, **_ERRORS},
                }
            },
            "/api/v1/services": {
                "get": {
                    "summary": "Every service",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "pid": {"type": "integer"},
                                    "services": {"type": "array", "items": _ref("Service")},
                                },
                            },
                            "the services, in configuration order",
                        ),
                        **_ERRORS,
                    },
                }
            },
            "/api/v1/services/{name}": {
                "parameters": [_NAME],
                "get": {
                    "summary": "One service",
                    "responses": {"200": _json(_ref("Service"), "the service"), **_ACTION_ERRORS},
                },
            },
            **{
                f"/api/v1/services/{{name}}/{action}": {
                    "parameters": [_NAME],
                    "post": {
                        "summary": f"{action.capitalize()} the service; answers once done",
                        "responses": {
                            "200": _json(_ref("Service"), "its status after"),
                            **_ACTION_ERRORS,
                        },
                    },
                }
                for action in ("start", "stop", "restart")
            },
            "/api/v1/services/{name}/signal": {
                "parameters": [_NAME],
                "post": {
                    "summary": "Send a signal to the service (its process group)",
                    "requestBody": _json(
                        {
                            "type": "object",
                            "required": ["signal"],
                            "properties": {
                                "signal": {
                                    "type": ["string", "integer"],
                                    "examples": ["HUP", "SIGUSR1", 10],
                                }
                            },
                        },
                        "the signal",
                    ),
                    "responses": {
                        "200": _json(_ref("Service"), "sent"),
                        "400": _json(_ref("Error"), "unknown signal"),
                        "409": _json(_ref("Error"), "the service has no process"),
                        **_ACTION_ERRORS,
                    },
                },
            },
            "/api/v1/services/{name}/logs": {
                "parameters": [
                    _NAME,
                    {
                        "name": "lines",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "default": 100},
                    },
                    {
                        "name": "follow",
                        "in": "query",
                        "schema": {"type": "boolean", "default": False},
                        "description": "then every new line, as server-sent events",
                    },
                ],
                "get": {
                    "summary": "The last lines of its output (kept by the supervisor)",
                    "responses": {
                        "200": {
                            "description": "JSON, or with follow=1 text/event-stream: "
                            "events `log` (a LogLine), `dropped` ({count}), `end`",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "lines": {"type": "array", "items": _ref("LogLine")}
                                        },
                                    }
                                },
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        **_ACTION_ERRORS,
                    },
                },
            },
            "/api/v1/events": {
                "get": {
                    "summary": "Server-sent events: `status` ({pid, services}) at once and "
                    "after every state change; `log` (a LogLine) for each new line of any "
                    "service, after the last `lines` of each",
                    "parameters": [
                        {
                            "name": "lines",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "default": 0},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "text/event-stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_ERRORS,
                    },
                }
            },
            "/api/v1/reload": {
                "post": {
                    "summary": "Read the configuration file again and apply it",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    k: {"type": "array", "items": {"type": "string"}}
                                    for k in ("added", "removed", "changed", "unchanged")
                                },
                            },
                            "what changed",
                        ),
                        "409": _json(_ref("Error"), "the new file is invalid: nothing changed"),
                        "501": _json(_ref("Error"), "no configuration file to reload"),
                        **_ERRORS,
                    },
                }
            },
            "/api/v1/logs/reopen": {
                "post": {
                    "summary": "Reopen the services' log files (after logrotate moved them)",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "files": {"type": "array", "items": {"type": "string"}}
                                },
                            },
                            "the files reopened",
                        ),
                        "409": _json(
                            _ref("Error"), "a file could not be opened again (still written)"
                        ),
                        **_ERRORS,
                    },
                }
            },
            "/api/v1/shutdown": {
                "post": {
                    "summary": "Stop every service and end the supervisor (as ctl shutdown)",
                    "responses": {
                        "202": _json(
                            {"type": "object", "properties": {"pid": {"type": "integer"}}},
                            "the shutdown has begun; the server ends with it",
                        ),
                        **_ERRORS,
                    },
                }
            },
        },
    }
