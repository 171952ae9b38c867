"""Alert processor, property-based: whatever lands in the bucket or on the queue, the handler
never raises, and every message is either processed or reported for retry (nothing silently
dropped). Every object is either indexed and forwarded once, or quarantined - never both."""

from __future__ import annotations

import base64
import json
import string
import uuid

from alerts.processor import handler as alert_handler
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from alerts.model import InvalidAlertJSON, parse_alert

from tests.alerts import test_processor as base
from tests.alerts.test_processor import (
    BUCKET,
    TEST_EVENT,
    LambdaContext,
    s3_notification,
    s3_record,
    sqs_event,
)

# The example-based tests' fixtures, shared by name (pytest finds fixtures among module globals).
account, classifier, env = base.account, base.classifier, base.env

VALID = {"header": {"fw": "1.4.2", "code": 7, "fields": {"1": 1.5}}, "trace": "aGk="}

PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

numbers = st.one_of(st.floats(), st.integers(min_value=-(2**70), max_value=2**70), st.booleans(),
                    st.text(max_size=3), st.none())
alert_like = st.fixed_dictionaries(
    {
        "header": st.fixed_dictionaries({
            "fw": st.one_of(st.text(max_size=40), numbers),
            "code": st.one_of(st.integers(min_value=-5, max_value=2**32), numbers),
            "fields": st.one_of(
                st.dictionaries(st.one_of(st.from_regex(r"[0-9]{1,7}", fullmatch=True), st.text(max_size=3)),
                                numbers, max_size=70),
                numbers),
        }),
        "trace": st.one_of(st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
                           st.text(max_size=20), numbers),
    },
    optional={"extra": numbers},
)
valid_alerts = st.fixed_dictionaries({
    "header": st.fixed_dictionaries({
        "fw": st.text(min_size=1, max_size=32),
        "code": st.integers(min_value=0, max_value=2**31 - 1),
        "fields": st.dictionaries(st.from_regex(r"[0-9]{1,6}", fullmatch=True),
                                  st.floats(allow_nan=False, allow_infinity=False)
                                  | st.integers(-(10**9), 10**9),
                                  max_size=64),
    }),
    "trace": st.binary(min_size=1, max_size=64).map(lambda b: base64.b64encode(b).decode()),
})
object_bodies = st.one_of(
    st.binary(max_size=600),
    valid_alerts.map(lambda d: json.dumps(d).encode()),
    alert_like.map(lambda d: json.dumps(d).encode()),
    st.builds(lambda d, cut: json.dumps(d).encode()[:cut], alert_like, st.integers(0, 200)),
)


@PROPERTY_SETTINGS
@given(body=object_bodies)
def test_any_object_body_is_forwarded_once_or_quarantined(env, body):
    env.classifier.requests.clear()
    key, version = env.put(body, thing=f"prop-{uuid.uuid4().hex[:8]}")
    record = s3_record(key, version, len(body))
    response = alert_handler.lambda_handler(sqs_event([s3_notification(record)] * 2), LambdaContext())

    assert response == {"batchItemFailures": []}  # the classifier answers 200: nothing to retry
    items = env.alerts.query(KeyConditionExpression="thing = :t",
                             ExpressionAttributeValues={":t": key.split("/")[1]})["Items"]
    quarantined = env.s3.list_objects_v2(Bucket=BUCKET, Prefix="quarantine/").get("Contents", [])
    mine = [o["Key"] for o in quarantined if o["Key"].endswith(key)]
    try:
        alert = parse_alert(body)
    except InvalidAlertJSON:
        event("invalid-json")
        assert mine == [f"quarantine/invalid-json/{key}"]
        assert items == [] and env.classifier.requests == []
    except ValidationError:
        event("invalid-alert")
        assert mine == [f"quarantine/invalid-alert/{key}"]
        assert items == [] and env.classifier.requests == []
    else:
        event("forwarded")
        assert mine == []
        assert len(items) == 1
        [request] = env.classifier.requests  # the duplicate in the batch was not forwarded
        sent = json.loads(request.body)
        assert sent["header"] == alert.header.model_dump()
        assert alert.trace.encode() not in request.raw


key_chars = st.text(alphabet=string.ascii_letters + string.digits + "/-_.+%é ", min_size=1, max_size=60)
s3_shaped = st.builds(
    lambda key, bucket, version, size, time, name: s3_notification(
        s3_record(key, version, size, bucket=bucket, event_time=time, event_name=name)),
    key=st.one_of(key_chars, st.builds(lambda k: f"alerts/t/2024/03/05/{k}.json", key_chars)),
    bucket=st.one_of(st.just(BUCKET), st.from_regex(r"[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]", fullmatch=True),
                     st.text(max_size=10)),
    version=st.one_of(st.none(), st.text(max_size=12)),
    size=st.integers(min_value=-1, max_value=2**40),
    time=st.one_of(st.just("2024-03-05T07:08:09.123Z"), st.text(max_size=25)),
    name=st.sampled_from(["ObjectCreated:Put", "ObjectCreated:CompleteMultipartUpload",
                          "ObjectRemoved:Delete"]),
)
NOTIFICATION_WORDS = st.sampled_from(
    ["Records", "s3", "eventSource", "eventName", "object", "key", "bucket", "Event"])
sqs_bodies = st.one_of(
    st.text(max_size=200),
    st.just(json.dumps(TEST_EVENT)),
    s3_shaped.map(json.dumps),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NOTIFICATION_WORDS, inner, max_size=3),
        max_leaves=10,
    ).map(json.dumps),
)


def _message_id(record) -> str:
    return record.message_id if hasattr(record, "message_id") else record["messageId"]


@PROPERTY_SETTINGS
@given(bodies=st.lists(sqs_bodies, min_size=1, max_size=5), real=st.sampled_from([None, "200", "500"]),
       position=st.integers(min_value=0, max_value=5))
def test_any_sqs_batch_is_fully_accounted_for(env, monkeypatch, bodies, real, position):
    """Odd bodies, plus (maybe) one message naming a real alert while the classifier is up or down."""
    monkeypatch.setattr(alert_handler._dependencies().forward.__self__, "sleep", lambda seconds: None)
    env.classifier.requests.clear()
    ids = [str(uuid.uuid4()) for _ in bodies]
    if real:
        key, version = env.put(json.dumps(VALID).encode(), thing=f"prop-{uuid.uuid4().hex[:8]}")
        bodies.insert(position, json.dumps(s3_notification(s3_record(key, version, 100))))
        ids.insert(position, "real")
        env.classifier.mode = real
    response = alert_handler.lambda_handler(sqs_event(bodies, ids), LambdaContext())
    env.classifier.mode = "200"

    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    processed = {_message_id(r) for r in alert_handler.processor.success_messages}
    event(f"{len(failed)} failed of {len(ids)}")
    assert failed | processed == set(ids)
    assert not failed & processed
    if real == "500":
        assert "real" in failed and len(env.classifier.requests) == 2
    elif real == "200":
        assert "real" in processed and len(env.classifier.requests) == 1
    else:
        assert env.classifier.requests == []  # none of these name a real alert object
