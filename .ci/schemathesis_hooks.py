"""Schemathesis hooks for .ci/schemathesis (loaded through SCHEMATHESIS_HOOKS).

Idempotency-Key: a retry of the same request under the same key gets the first 2xx answer again
without the work being done twice (IETF draft "The Idempotency-Key HTTP Header Field"; Stripe's
behaviour). Hypothesis draws small keys again and again, so the stateful phase sends the same
create request with the same key twice: once before and once after deleting what it created. The
second answer is, correctly, the recorded 201 of the first — and schemathesis' ST302 ("created
resource not found") then reports the resource it deleted itself. So every *valid* generated key
is made unique per request: every request is still sent with a key (the header's code path, its
fingerprint and its store are exercised on every operation), invalid keys (negative data) are
left as drawn, and replays themselves are tested by tests/suite/api/idempotency.rs.
"""

import re
import uuid

import schemathesis

VALID = re.compile(r"^[!-~]{1,255}$")


@schemathesis.hook
def map_headers(ctx, headers):
    if headers:
        for name in list(headers):
            if name.lower() == "idempotency-key":
                key = headers[name]
                # A drawn null is sent as the text "null", itself a valid key.
                if key is None or (isinstance(key, str) and VALID.match(key)):
                    headers[name] = uuid.uuid4().hex
    return headers
