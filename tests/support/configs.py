"""Config text for data-plane tests."""

from __future__ import annotations


def proxy_config(
    *targets: str,
    extra_upstream: str = "",
    extra: str = "",
    workers: int = 1,
    limits: str = "",
    listener_extra: str = "",
) -> str:
    target_lines = "".join(f'        target "{t}"\n' for t in targets)
    return (
        f"system {{\n    worker-threads {workers}\n}}\n"
        f'listeners {{\n    listener "http" {{\n        address "127.0.0.1:0"\n{listener_extra}    }}\n}}\n'
        "routes {\n"
        '    route "api" {\n        matches { path-prefix "/"; }\n        upstream "backend"\n'
        '        policies {\n            request-headers { set "x-policy" "on"; remove "x-drop-me"; }\n'
        '            response-headers { add "x-served-by" "sentinel"; remove "set-cookie"; }\n        }\n    }\n'
        '    route "health" {\n        priority "critical"\n        matches { path "/health"; }\n'
        '        builtin-handler "health"\n    }\n'
        '    route "status" {\n        priority "critical"\n        matches { path "/status"; }\n'
        '        builtin-handler "status"\n    }\n'
        '    route "upstreams" {\n        priority "critical"\n        matches { path "/upstreams"; }\n'
        '        builtin-handler "upstreams"\n    }\n'
        "}\n"
        f'upstreams {{\n    upstream "backend" {{\n{target_lines}{extra_upstream}    }}\n}}\n'
        f"{limits}{extra}"
    )
