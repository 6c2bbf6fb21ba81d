"""schemathesis hooks of tests/schemathesis.rs: long-polls in range wait 0 s.

Three routes may hold a request open on purpose (a claim's `wait_seconds` up to 30 s, a
result's `?wait=` up to 60 s, a trigger's `Prefer: wait=N` up to 60 s). With no worker in the
test every such wait would run its full length, so a wait inside its documented range is sent
as 0: the request is as valid as before and answers at once. Values outside the range (the
negative cases) are sent unchanged, so the server's refusal of them is still tested. The
waits themselves are tested by the server's own tests.
"""

import re

import schemathesis


def _in_range(value, top):
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0 < value <= top
    # A whole number written as a float (`16.0`) is an integer too (JSON Schema says so).
    if isinstance(value, float) and value.is_integer():
        return 0 < value <= top
    if isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
        return 0 < int(value.strip()) <= top
    return False


@schemathesis.hook
def before_call(context, case, kwargs):
    path = case.operation.path
    if path.endswith("/workers/claim") and isinstance(case.body, dict):
        if _in_range(case.body.get("wait_seconds"), 30):
            case.body["wait_seconds"] = 0
    if path.endswith("/result") and isinstance(case.query, dict):
        if _in_range(case.query.get("wait"), 60):
            case.query["wait"] = 0
    if path.endswith("/runs") and isinstance(case.headers, dict):
        for name in list(case.headers):
            if name.lower() == "prefer":
                match = re.fullmatch(r"\s*wait\s*=\s*([0-9]+)\s*", str(case.headers[name]))
                if match and _in_range(match.group(1), 60):
                    case.headers[name] = "wait=0"
