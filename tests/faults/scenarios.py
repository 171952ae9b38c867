"""The sweep's scenarios: every Lambda function of the app, once per event source it is wired to.

Adding a function (e.g. the commands capability's) is one `Scenario` appended to SCENARIOS:

    Scenario(function="commands.issuer", source=AsyncInvoke("SNS"),      # or SqsPartialBatch(...), ...
             world=..., event=..., invoke=..., state=...)

* `world(injector)`: inside mock_aws, create what the stack creates for it (tables with their keys and
  indexes, buckets, topics read through a subscribed queue, things and certificates), set the
  function's environment (`Env`), clear the handler's cached clients (`_dependencies.cache_clear()`),
  and return a handle;
* `event(world)`: the event exactly as the source delivers it (reuse the builders in tests/<cap>/);
* `invoke(world, event)`: the handler's call with a real-shaped context;
* `state(world)`: every effect, read back as {effect: [canonical(value), ...]} with volatile fields
  (generated ids, times) dropped, so equal effects compare equal across runs;
* `stranded(world)` / `time_passes(world, seconds)` / `harmless` when the function has leases, locks
  or effects a receiver deduplicates (see sweep.Scenario).
The sweep then runs it clean and under every fault kind at every call it makes.
"""

from __future__ import annotations

import json
import os
import time
from types import SimpleNamespace
from typing import Any

from tests.faults.injector import Injector
from tests.faults.sweep import (
    RECORDED,
    HARMLESS,
    REGION,
    AsyncInvoke,
    CustomResource,
    FirehoseTransform,
    KinesisBatch,
    Scenario,
    SqsPartialBatch,
    Synchronous,
    canonical,
    client,
    resource,
)
from tests.helpers import AUDIT_TABLE, TOKENS_TABLE, create_tables, scan



class Env:
    """The function's environment for one run, restored by `restore()` (the scenario's teardown)."""

    def __init__(self, values: dict[str, str], unset: tuple[str, ...] = ()):
        self.saved = {k: os.environ.get(k) for k in (*values, *unset)}
        for key in unset:
            os.environ.pop(key, None)
        os.environ.update(values)

    def restore(self) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def items(table: Any, drop: tuple[str, ...] = (), **replace: Any) -> list[str]:
    """A table's items as canonical text, without the volatile attributes `drop`."""
    out = []
    for item in scan(table):
        kept = {k: v for k, v in item.items() if k not in drop}
        for key, value in replace.items():
            if key in kept:
                kept[key] = value(kept[key]) if callable(value) else value
        out.append(canonical(kept))
    return out


def audit_records(table: Any) -> list[str]:
    """The audit trail: what was done to what, by whom (its event ids and times vary)."""
    return items(table, drop=("event_id", "at"))


def _teardown(world: Any) -> None:
    world.env.restore()


# ---- identity: the pre-provisioning hook (IoT fleet provisioning; no retry, the answer decides) ----


def _hook_world(injector: Injector) -> Any:
    from identity.provisioning_hook import handler

    from tests.defense.test_auto_response import certificate_pems
    from tests.identity.test_provisioning_hook import issue

    env = Env({"TOKENS_TABLE": TOKENS_TABLE, "AUDIT_TABLE": AUDIT_TABLE}, unset=("SERIAL_PATTERN",))
    handler._dependencies.cache_clear()
    tokens, audit = create_tables(resource("dynamodb"))
    iot = client("iot")
    # The certificate fleet provisioning created from the device's CSR, not yet activated by the template.
    certificate = iot.register_certificate_without_ca(certificatePem=certificate_pems()[0],
                                                      status="PENDING_ACTIVATION")["certificateId"]
    return SimpleNamespace(env=env, handler=handler, tokens=tokens, audit=audit, iot=iot,
                           token=issue(tokens, issued_at=time.time()), certificate=certificate)


def _hook_invoke(world: Any, event: dict) -> dict:
    from tests.identity.conftest import HookContext

    return world.handler.lambda_handler(event, HookContext())


def _hook_state(world: Any) -> dict[str, list[str]]:
    return {
        # One device per token: which certificate used it, not when or how often.
        "tokens": items(world.tokens, drop=("token_hash", "issued_at", "expires_at", "used_at", "last_used_at",
                                            "uses")),
        # A retry by the same certificate is audited as a use again (`uses` counts them).
        "audit": items(world.audit, drop=("event_id", "at"),
                       action=lambda a: a.replace(".retry", ".use"),
                       details=lambda d: {k: v for k, v in d.items() if k not in ("uses", "token_hash_prefix")}),
    }


def hook_scenario() -> Scenario:
    from tests.identity.test_provisioning_hook import hook_event

    return Scenario(
        function="identity.provisioning_hook",
        # "Pre-provisioning hooks": IoT fails the RegisterThing request unless the hook answers
        # allowProvisioning true in 5 s; the device may send RegisterThing again.
        source=Synchronous("IoT pre-provisioning hook", ok=lambda answer: answer["allowProvisioning"] is True),
        world=_hook_world,
        event=lambda world: hook_event(token=world.token, certificate_id=world.certificate),
        invoke=_hook_invoke,
        state=_hook_state,
        tolerated={"audit": (RECORDED, "a device's re-sent RegisterThing is audited as one more use of its token "
                                       "by the same certificate (`uses` counts them); the token stays one device's")},
        teardown=_teardown,
    )


# ---- identity: the token API (API Gateway REST, Cognito authoriser) --------------------------------


def _token_api_world(injector: Injector) -> Any:
    from identity.token_api import handler

    env = Env({"TOKENS_TABLE": TOKENS_TABLE, "AUDIT_TABLE": AUDIT_TABLE, "TOKEN_TTL_SECONDS": "900",
               "ADMIN_GROUP": "admins"}, unset=("SERIAL_PATTERN",))
    handler._dependencies.cache_clear()
    tokens, audit = create_tables(resource("dynamodb"))
    return SimpleNamespace(env=env, handler=handler, tokens=tokens, audit=audit, answers=[])


def _token_api_invoke(world: Any, event: dict) -> dict:
    from tests.helpers import LambdaContext

    answer = world.handler.lambda_handler(event, LambdaContext())
    world.answers.append(answer)
    return answer


def _token_api_state(world: Any) -> dict[str, list[str]]:
    return {
        "tokens": [canonical({"serial": i["serial"], "issued_by": i["issued_by"]}) for i in scan(world.tokens)],
        "audit": items(world.audit, drop=("event_id", "at", "details")),
    }


def token_api_scenario() -> Scenario:
    from tests.identity.test_token_api import api_event

    return Scenario(
        function="identity.token_api",
        source=Synchronous("API Gateway (POST /provisioning-tokens)", ok=lambda answer: answer["statusCode"] == 201),
        world=_token_api_world,
        event=lambda world: api_event(),
        invoke=_token_api_invoke,
        state=_token_api_state,
        tolerated={
            "tokens": (HARMLESS, "a token whose answer was lost is stored and audited, but nobody holds it: only "
                                 "its hash exists, and it expires unused after TOKEN_TTL_SECONDS"),
            "audit": (HARMLESS, "the issue of a token whose answer was lost (inert, see tokens)")},
        teardown=_teardown,
    )


# ---- shared readers -------------------------------------------------------------------------------


def topic_inbox(name: str) -> tuple[str, Any]:
    """An SNS topic as the stack makes it, read back through a subscribed SQS queue: (ARN, reader)."""
    from tests.helpers import topic_with_inbox

    sqs = client("sqs")
    topic, queue_url = topic_with_inbox(client("sns"), sqs, name)
    seen: list[dict] = []

    def read() -> list[dict]:
        """Every notification delivered so far: {"subject", "message"} (JSON messages decoded)."""
        while True:
            got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                return list(seen)
            for message in got:
                body = json.loads(message["Body"])
                try:
                    text: Any = json.loads(body["Message"])
                except ValueError:
                    text = body["Message"]
                seen.append({"subject": body.get("Subject"), "message": text})
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    return topic, read


def violations(read: Any) -> dict[str, list[str]]:
    """A violation topic's effects: the distinct violations (what the auto-response acts on: it is
    idempotent on violationId) and every copy published."""
    published = [n["message"] for n in read()]
    kept = [canonical({k: v for k, v in m.items() if k not in ("violationEventTime",)}) for m in published]
    return {"violations": sorted(set(kept)), "violation copies": kept}


# Only FIFO topics deduplicate ("Amazon SNS message deduplication for FIFO topics",
# https://docs.aws.amazon.com/sns/latest/dg/fifo-message-dedup.html), and an asynchronously invoked
# function may "receive the same event from Lambda multiple times" even without an error ("How Lambda
# handles errors and retries with asynchronous invocation",
# https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html): the
# auto-response already has to treat a second copy of a violation as a duplicate, and does.
VIOLATION_COPIES = (HARMLESS, "the same violation (same violationId) published twice: SNS standard topics "
                              "deliver at least once anyway and the auto-response is idempotent on violationId")


# ---- defense: the authorization-failure detector (CloudWatch Logs subscription, asynchronous) ----


def _auth_world(injector: Injector) -> Any:
    from defense.auth_failures import handler

    from tests.defense.test_auth_failures import MAX, PROFILE, TABLE, WINDOW_SECONDS
    from tests.defense.test_auto_response import certificate_pems

    topic, read = topic_inbox("fleetwarden-test-violations")
    env = Env({"COUNTERS_TABLE": TABLE, "PROFILE_NAME": PROFILE, "WINDOW_SECONDS": str(WINDOW_SECONDS),
               "MAX_AUTH_FAILURES": str(MAX), "VIOLATION_TOPIC_ARN": topic})
    handler._dependencies.cache_clear()
    dynamodb = client("dynamodb")
    dynamodb.create_table(TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                          BillingMode="PAY_PER_REQUEST")
    dynamodb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={"Enabled": True,
                                                                           "AttributeName": "expires_at"})
    # The device, with its own certificate: its refused connections are its own (attribution).
    iot = client("iot")
    iot.create_thing(thingName="sensor-0042")
    certificate = iot.register_certificate_without_ca(certificatePem=certificate_pems()[1], status="ACTIVE")
    iot.attach_thing_principal(thingName="sensor-0042", principal=certificate["certificateArn"])
    counters = resource("dynamodb").Table(TABLE)
    return SimpleNamespace(env=env, handler=handler, read=read, counters=counters,
                           certificate=certificate["certificateId"])


def _auth_state(world: Any) -> dict[str, list[str]]:
    return {**violations(world.read), "counters": items(world.counters, drop=("expires_at", "seen"), alarmed=True)}


def auth_failures_scenario() -> Scenario:
    from tests.defense.test_auth_failures import MAX, LambdaContext, delivery, refused_connects

    return Scenario(
        function="defense.auth_failures",
        # CloudWatch Logs invokes the function asynchronously: Lambda retries twice, then the
        # on-failure destination (stacks/defense/builtin_detector.py).
        source=AsyncInvoke("CloudWatch Logs subscription (async)"),
        world=_auth_world,
        event=lambda world: delivery(refused_connects(MAX + 1, "sensor-0042", world.certificate)),
        invoke=lambda world, event: world.handler.lambda_handler(event, LambdaContext()),
        state=_auth_state,
        tolerated={"violation copies": VIOLATION_COPIES},
        teardown=_teardown,
    )


# ---- defense: the auto-response (the violation topic's subscriber, asynchronous) --------------------


def _connections_fake(world: Any) -> Any:
    """DeleteConnection, which moto lacks, as the data plane answers it: "HTTP 200 with an empty HTTP
    body" for a connected client, ResourceNotFoundException once it is gone
    (https://docs.aws.amazon.com/iot/latest/apireference/API_iotdata_DeleteConnection.html)."""
    from tests.faults.injector import answer

    def delete_connection(request: Any) -> Any:
        client_id = request.url.split("/connections/")[1].split("?")[0]
        if client_id not in world.connected:
            return answer(request, 404, {"message": "No connection found"},
                          {"x-amzn-ErrorType": "ResourceNotFoundException"})
        world.connected.discard(client_id)
        world.sessions_ended.append(client_id)
        return answer(request, 200)

    return delete_connection


def _auto_response_world(injector: Injector) -> Any:
    from defense.auto_response import handler

    from tests.defense.test_auto_response import (
        DATA_ENDPOINT, EXEMPT_GROUP, INCIDENTS_TABLE, QUARANTINE_GROUP, THING, THING_ARN_PREFIX,
        create_incidents_table, make_thing,
    )

    from shared import commands

    topic, read = topic_inbox("fleetwarden-test-ops")
    kms = client("kms")
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    env = Env({"INCIDENTS_TABLE": INCIDENTS_TABLE, "QUARANTINE_GROUP": QUARANTINE_GROUP, "REVOCATION": "deactivate",
               "EXEMPT_GROUP": EXEMPT_GROUP, "DRY_RUN": "false", "IOT_DATA_ENDPOINT": DATA_ENDPOINT,
               "OPS_TOPIC_ARN": topic, "THING_ARN_PREFIX": THING_ARN_PREFIX, "SIGNING_KEY_ARN": key,
               # the stack passes the key id it read at deploy time
               "SIGNING_KEY_ID": commands.key_id(kms.get_public_key(KeyId=key)["PublicKey"])})
    handler._dependencies.cache_clear()
    table = create_incidents_table(resource("dynamodb"))
    iot = client("iot")
    iot.create_thing_group(thingGroupName=QUARANTINE_GROUP)
    iot.create_thing_group(thingGroupName=EXEMPT_GROUP)
    certificates = make_thing(iot, THING)
    world = SimpleNamespace(env=env, handler=handler, read=read, table=table, iot=iot, thing=THING,
                            certificates=certificates, connected={THING}, sessions_ended=[], shift=0.0)
    injector.fakes["iot-data-plane.DeleteConnection"] = _connections_fake(world)
    injector.fakes["iot.CreateJob"] = create_job_fake(set())
    return world


def create_job_fake(created: set[str]) -> Any:
    """CreateJob as IoT answers it: an existing job id is ResourceAlreadyExistsException ("The resource
    already exists", https://docs.aws.amazon.com/iot/latest/apireference/API_CreateJob.html); moto
    would overwrite the job instead."""
    from tests.faults.injector import Injector, answer

    def create_job(request: Any) -> Any:
        job_id = request.url.split("/jobs/")[1].split("?")[0]
        if job_id in created:
            return answer(request, 409, {"message": "The resource already exists", "resourceId": job_id},
                          {"x-amzn-ErrorType": "ResourceAlreadyExistsException"})
        created.add(job_id)
        return Injector.moto("iot.CreateJob", request)

    return create_job


def _auto_response_invoke(world: Any, event: dict) -> Any:
    from tests.defense.test_auto_response import LambdaContext

    responder = world.handler._dependencies()
    responder.now = lambda: time.time() + world.shift  # leases are read on this clock
    return world.handler.lambda_handler(event, LambdaContext())


SESSION_ENDED = {"done", "skipped:not-connected"}  # DeleteConnection: ended now, or found already ended


def _incident(item: dict) -> dict:
    volatile = ("received_at", "updated_at", "lease_until", "attempts", "violation")
    kept = {k: v for k, v in item.items() if k not in volatile}
    kept["steps"] = {k: ("ended" if k == "disconnect" and v in SESSION_ENDED else v)
                     for k, v in (item.get("steps") or {}).items()}
    return kept


def _notification(notification: dict) -> str:
    """A DeleteConnection re-run after its first attempt ended the session finds none ("it had no
    live session", `skipped:not-connected`): the same end state as "done"."""
    text = canonical(notification).replace("it had no live session", "its live session was ended")
    return text.replace('\\"disconnect\\": \\"skipped:not-connected\\"', '\\"disconnect\\": \\"done\\"')


def _auto_response_state(world: Any) -> dict[str, list[str]]:
    groups = world.iot.list_thing_groups_for_thing(thingName=world.thing)["thingGroups"]
    state = {
        "incidents": [canonical(_incident(i)) for i in scan(world.table)],
        "thing groups": [g["groupName"] for g in groups],
        "certificates": [world.iot.describe_certificate(certificateId=c)["certificateDescription"]["status"]
                         for c in world.certificates],
        "sessions ended": list(world.sessions_ended),
        "jobs": [canonical({"id": j["jobId"], "status": j["status"]}) for j in world.iot.list_jobs()["jobs"]],
        "ops notifications": [_notification(n) for n in world.read()],
    }
    return renamed(state, {c: f"<certificate {n}>" for n, c in enumerate(world.certificates)})


def renamed(state: dict[str, list[str]], names: dict[str, str]) -> dict[str, list[str]]:
    """The state with generated ids (certificate ids, ...) replaced by stable names."""
    def rename(text: str) -> str:
        for old, new in names.items():
            text = text.replace(old, new)
        return text

    return {effect: [rename(text) for text in texts] for effect, texts in state.items()}


def _auto_response_stranded(world: Any) -> str | None:
    stuck = [i["violation_id"] for i in scan(world.table) if i.get("status") == "in-progress"]
    return f"incident {stuck[0]} left in-progress" if stuck else None


# Publishing and recording that it was published cannot be one atomic step: the notification is
# at-least-once (recorded after it is sent), never at-most-once (it could be lost).
OPS_COPIES = ("the ops notification sent again by the retry of an incident whose `notify` step was not yet "
              "recorded: SNS standard topics have no deduplication (and may deliver twice anyway); both "
              "copies name the same incident (violationId)")


def auto_response_scenario() -> Scenario:
    from tests.defense.test_auto_response import SAMPLE, sns_event

    def time_passes(world: Any, seconds: float) -> None:
        world.shift += seconds

    return Scenario(
        function="defense.auto_response",
        # SNS invokes Lambda asynchronously; the stack sets retry_attempts=2 and an on-failure
        # destination (stacks/defense/auto_response.py).
        source=AsyncInvoke("SNS (async)"),
        world=_auto_response_world,
        event=lambda world: sns_event(SAMPLE),
        invoke=_auto_response_invoke,
        state=_auto_response_state,
        stranded=_auto_response_stranded,
        time_passes=time_passes,
        tolerated={"ops notifications": (HARMLESS, OPS_COPIES)},
        teardown=_teardown,
    )


# ---- defense: device admin (fleetctl -> `aws lambda invoke`, synchronous) ---------------------------


def _device_admin_world(injector: Injector) -> Any:
    from defense.device_admin import handler

    from tests.defense.test_auto_response import INCIDENTS_TABLE, QUARANTINE_GROUP, THING, create_incidents_table
    from tests.defense.test_device_admin import contained_device

    env = Env({"QUARANTINE_GROUP": QUARANTINE_GROUP, "AUDIT_TABLE": AUDIT_TABLE, "INCIDENTS_TABLE": INCIDENTS_TABLE})
    handler._dependencies.cache_clear()
    dynamodb = resource("dynamodb")
    _, audit = create_tables(dynamodb)
    incidents = create_incidents_table(dynamodb)
    iot = client("iot")
    iot.create_thing_group(thingGroupName=QUARANTINE_GROUP)
    world = SimpleNamespace(env=env, handler=handler, audit=audit, incidents=incidents, iot=iot, thing=THING)
    world.certificates = contained_device(world, ("INACTIVE",))
    # The incident that contained it, as the auto-response leaves it.
    incidents.put_item(Item={"violation_id": "37e18651d207bbc74236c13faf146127", "thing": THING,
                             "received_at": "2023-11-14T22:13:20.000Z", "status": "contained", "steps": {}})
    return world


def _device_admin_state(world: Any) -> dict[str, list[str]]:
    groups = world.iot.list_thing_groups_for_thing(thingName=world.thing)["thingGroups"]
    return {
        # One record per attempt: what was asked, and how it ended (its details say what was done).
        "audit trail": [canonical({"action": r["action"], "actor": r["actor"], "target": r["target"],
                                   "status": r["details"].get("status")}) for r in scan(world.audit)],
        "thing groups": [g["groupName"] for g in groups],
        "certificates": [world.iot.describe_certificate(certificateId=c)["certificateDescription"]["status"]
                         for c in world.certificates],
        "incidents": items(world.incidents, drop=("updated_at", "reinstated_at")),
    }


def device_admin_scenario() -> Scenario:
    from tests.defense.test_device_admin import request
    from tests.helpers import LambdaContext

    return Scenario(
        function="defense.device_admin",
        # fleetctl invokes it with RequestResponse and shows the answer; the operator re-runs it.
        source=Synchronous("Lambda Invoke (fleetctl reinstate)", ok=lambda answer: answer.get("ok") is True),
        world=_device_admin_world,
        event=lambda world: request("reinstate"),
        invoke=lambda world, event: world.handler.lambda_handler(event, LambdaContext()),
        state=_device_admin_state,
        tolerated={"audit trail": (RECORDED, "every attempt is audited: `requested`, then `completed` or `failed` "
                                             "with what was done; the operator's re-run completes it")},
        teardown=_teardown,
    )


def device_admin_quarantine_scenario() -> Scenario:
    """The other action fleetctl sends the same function: quarantine by hand."""
    from tests.defense.test_device_admin import request
    from tests.helpers import LambdaContext

    def world(injector: Injector) -> Any:
        built = _device_admin_world(injector)
        built.iot.remove_thing_from_thing_group(thingGroupName=os.environ["QUARANTINE_GROUP"], thingName=built.thing)
        return built

    return Scenario(
        function="defense.device_admin",
        source=Synchronous("Lambda Invoke (fleetctl quarantine)", ok=lambda answer: answer.get("ok") is True),
        world=world,
        event=lambda world: request("quarantine"),
        invoke=lambda world, event: world.handler.lambda_handler(event, LambdaContext()),
        state=_device_admin_state,
        tolerated=device_admin_scenario().tolerated,
        teardown=_teardown,
    )


# ---- defense: the built-in detector (Kinesis, tumbling windows) ------------------------------------


def _detector_world(injector: Injector) -> Any:
    from defense.detector import handler

    from tests.defense.test_detector_handler import ENV

    topic, read = topic_inbox("fleetwarden-test-violations")
    env = Env({**ENV, "VIOLATION_TOPIC_ARN": topic}, unset=("MAX_TRACKED_THINGS",))
    for cached in (handler._settings, handler._sns, handler._attachments):
        cached.cache_clear()
    # A device whose own certificate is refused under its name: the registry proves it is its own.
    from tests.defense.test_auto_response import certificate_pems

    iot = client("iot")
    iot.create_thing(thingName="SN-B")
    certificate = iot.register_certificate_without_ca(certificatePem=certificate_pems()[2], status="ACTIVE")
    iot.attach_thing_principal(thingName="SN-B", principal=certificate["certificateArn"])
    return SimpleNamespace(env=env, handler=handler, read=read, answers=[], certificate=certificate["certificateId"])


def _detector_invoke(world: Any, event: dict) -> dict:
    from tests.defense.test_detector_handler import LambdaContext

    answer = world.handler.lambda_handler(event, LambdaContext())
    world.answers.append(json.loads(json.dumps(answer)))  # what Lambda keeps of it for the next batch
    return answer


def _window(state: dict) -> str:
    """The window state the next batch gets; presence events are remembered by hashes of their
    (per-run) session ids, so only how many per subject."""
    return canonical({k: ({s: len(h) for s, h in v.items()} if k == "p" else v) for k, v in state.items()})


def detector_scenario() -> Scenario:
    from tests.defense.test_detector import presence, telemetry
    from tests.defense.test_detector_handler import tumbling_event

    def event(world: Any) -> dict:
        """One device over MAX_MESSAGES (100) in the window, and another refused 11 times with its own
        certificate (attributed to it by one ListThingPrincipals)."""
        flood = [telemetry("sensor-0042") for _ in range(101)]
        refused = [presence("SN-B", "connect_failed", principal=world.certificate) for _ in range(11)]
        return tumbling_event(flood + refused)

    return Scenario(
        function="defense.detector",
        source=KinesisBatch(retries=3, bisect=False),  # stacks/defense/builtin_detector.py
        world=_detector_world,
        event=event,
        invoke=_detector_invoke,
        state=lambda world: {**violations(world.read), "window state": [_window(a["state"]) for a in world.answers]},
        tolerated={"violation copies": VIOLATION_COPIES},
        teardown=_teardown,
    )


# ---- alerts: the alerts API (API Gateway REST, Cognito authoriser): the audited trace URL -----------


def _alerts_api_world(injector: Injector) -> Any:
    from alerts.api import handler

    from tests.alerts.test_api import DATA_BUCKET, ENV, store_alert
    from tests.helpers import create_alerts_table

    env = Env(ENV)
    handler._dependencies.cache_clear()
    dynamodb = resource("dynamodb")
    table = create_alerts_table(dynamodb)
    _, audit = create_tables(dynamodb)
    s3 = client("s3")
    s3.create_bucket(Bucket=DATA_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_versioning(Bucket=DATA_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    stored = store_alert(table, s3, "pump-7", "2023-11-14T12:00:00.000Z", 1)
    return SimpleNamespace(env=env, handler=handler, audit=audit, alert_id=stored["alert_id"])


def alerts_api_scenario() -> Scenario:
    from tests.alerts.test_api import trace_event
    from tests.helpers import LambdaContext

    return Scenario(
        function="alerts.api",
        source=Synchronous("API Gateway (GET /alerts/{id}/trace)", ok=lambda answer: answer["statusCode"] == 200),
        world=_alerts_api_world,
        event=lambda world: trace_event(world.alert_id),
        invoke=lambda world, event: world.handler.lambda_handler(event, LambdaContext()),
        state=lambda world: renamed({"audit": audit_records(world.audit)}, {world.alert_id: "<alert id>"}),
        tolerated={"audit": (HARMLESS, "a fetch audited whose answer (the URL) was lost: the trail may over-record "
                                       "a URL nobody received, never miss one that was")},
        teardown=_teardown,
    )


# ---- alerts: the alert processor (SQS of S3 notifications, partial batch responses) -----------------


_classifier = None


def classifier() -> Any:
    """The vendor's classifier: a real HTTP server on 127.0.0.1 (one per session), recording every POST."""
    global _classifier
    if _classifier is None:
        from tests.alerts.test_processor import Classifier

        _classifier = Classifier()
    return _classifier


def _processor_world(injector: Injector) -> Any:
    from alerts.processor import handler

    from tests.alerts.test_processor import (
        API_KEY, API_KEY_SECRET, BUCKET, DEVICE_REF_KEY, DEVICE_REF_SECRET, ENVIRONMENT, create_alert_tables,
        valid_alert,
    )

    server = classifier()
    server.mode, server.requests[:] = "200", []
    env = Env({**ENVIRONMENT, "CLASSIFIER_URL": server.url, "ALERTS_BUCKET": BUCKET},
              unset=("AWS_LAMBDA_FUNCTION_NAME",))
    handler._dependencies.cache_clear()
    s3 = client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    secrets = client("secretsmanager")
    secrets.create_secret(Name=API_KEY_SECRET, SecretString=API_KEY)
    secrets.create_secret(Name=DEVICE_REF_SECRET, SecretString=DEVICE_REF_KEY)
    alerts, idempotency = create_alert_tables(resource("dynamodb"))
    key = "alerts/sensor-0042/2024/03/05/1709622489123-0f4d7b2e.json"
    version = s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(valid_alert()).encode())["VersionId"]
    # The HTTP POST is one more numbered call of the sweep; its retry backoff is not waited for.
    forwarder = handler._dependencies().forward.__self__
    forwarder.post = injector.wrap("classifier.POST", forwarder.post, lambda: TimeoutError("read timed out"))
    forwarder.sleep = lambda seconds: None
    return SimpleNamespace(env=env, handler=handler, s3=s3, bucket=BUCKET, key=key, version=version,
                           alerts=alerts, idempotency=idempotency, server=server)


def _processor_state(world: Any) -> dict[str, list[str]]:
    posts = [(r.headers.get("idempotency-key"), json.loads(r.body)) for r in world.server.requests]
    originals = world.s3.get_object_tagging(Bucket=world.bucket, Key=world.key, VersionId=world.version)
    quarantined = world.s3.list_objects_v2(Bucket=world.bucket, Prefix="quarantine/").get("Contents", [])
    alert_ids = [item["alert_id"] for item in scan(world.alerts)]
    state = {
        "index": items(world.alerts),
        "idempotency records": [i["status"] for i in scan(world.idempotency)],
        # What the vendor acts on: one classification per Idempotency-Key (README, vendor contract).
        "classified": sorted({canonical({"idempotency-key": k, "body": b}) for k, b in posts if k is not None})
                      + [canonical({"idempotency-key": None, "body": b}) for k, b in posts if k is None],
        "classifier POSTs": [canonical(b) for _, b in posts],
        "quarantine": [o["Key"] for o in quarantined] + [canonical(t) for t in originals["TagSet"]],
    }
    return renamed(state, {world.version: "<version>", **{a: "<alert id>" for a in alert_ids}})


def _processor_time_passes(world: Any, seconds: float) -> None:
    """The visibility timeout (6 x the function's timeout) has passed: Powertools' in-progress lock of a
    dead invocation (held until that invocation's timeout) has expired."""
    now_ms = int(time.time() * 1000)
    for item in scan(world.idempotency):
        if item.get("status") == "INPROGRESS":
            world.idempotency.update_item(Key={"id": item["id"]}, UpdateExpression="SET in_progress_expiration = :t",
                                          ExpressionAttributeValues={":t": now_ms - 1})


def _processor_stranded(world: Any) -> str | None:
    stuck = [i["id"] for i in scan(world.idempotency) if i.get("status") == "INPROGRESS"]
    return f"idempotency record {stuck[0]} left INPROGRESS" if stuck else None


def alerts_list_scenario() -> Scenario:
    """The API's other route: a read, so a failure must only ever be an honest 5xx."""
    from tests.alerts.test_api import api_event
    from tests.helpers import LambdaContext

    def invoke(world: Any, event: dict) -> dict:
        answer = world.handler.lambda_handler(event, LambdaContext())
        world.answers.append(answer)
        return answer

    def world(injector: Injector) -> Any:
        built = _alerts_api_world(injector)
        built.answers = []
        return built

    return Scenario(
        function="alerts.api",
        source=Synchronous("API Gateway (GET /alerts)", ok=lambda answer: answer["statusCode"] == 200),
        world=world,
        event=lambda world: api_event(query={"thing": "pump-7"}),
        invoke=invoke,
        # What the analyst finally got: the page (a read changes nothing else).
        state=lambda world: renamed({"page": [a["body"] for a in world.answers if a["statusCode"] == 200]},
                                    {world.alert_id: "<alert id>"}),
        teardown=_teardown,
    )


def alert_processor_scenario() -> Scenario:
    from tests.alerts.test_processor import LambdaContext, notify, sqs_event

    return Scenario(
        function="alerts.processor",
        # stacks/alerts/pipeline.py: visibility 6 x 90 s, ReportBatchItemFailures, DLQ after 5 receives.
        source=SqsPartialBatch(visibility_seconds=540, max_receives=5),
        world=_processor_world,
        event=lambda world: sqs_event([notify(world, world.key, world.version)]),
        invoke=lambda world, event: world.handler.lambda_handler(event, LambdaContext()),
        state=_processor_state,
        stranded=_processor_stranded,
        time_passes=_processor_time_passes,
        tolerated={"classifier POSTs": (HARMLESS, "the alert POSTed again (an answer lost, or the run's completion "
                                                  "not recorded) with the same Idempotency-Key, the alert id: the "
                                                  "vendor classifies it once (README, vendor contract)")},
        teardown=_teardown,
    )


# ---- commands: the command issuer (API Gateway REST, Cognito authoriser): POST /commands -----------


def _issuer_world(injector: Injector) -> Any:
    from commands.issuer import handler

    from tests.commands.conftest import ARTIFACTS, PRESIGN_ROLE, THING

    kms = client("kms")
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    env = Env({"SIGNING_KEY_ARN": key, "AUDIT_TABLE": AUDIT_TABLE, "ARTIFACTS_BUCKET": ARTIFACTS,
               "PRESIGN_ROLE_ARN": PRESIGN_ROLE, "JOB_TIMEOUT_MINUTES": "60", "JOB_RETRY_ATTEMPTS": "2",
               "PRESIGN_SECONDS": "3600", "DEFAULT_LIFETIME_SECONDS": "86400", "MAX_ARTIFACT_BYTES": "1048576",
               "TUNNEL_LIFETIME_MINUTES": "60", "ADMIN_GROUP": "admins",
               "ROTATIONS_TABLE": "fleetwarden-test-rotations", "ROTATION_GRACE_SECONDS": "259200",
               "AWS_REGION": REGION}, unset=("SIGNING_KEY_ID",))
    handler._issuer.cache_clear()
    _, audit = create_tables(resource("dynamodb"))
    iot = client("iot")
    iot.create_thing(thingName=THING)
    injector.fakes["iot.CreateJob"] = create_job_fake(set())
    return SimpleNamespace(env=env, handler=handler, audit=audit, iot=iot)


def _issuer_state(world: Any) -> dict[str, list[str]]:
    jobs = world.iot.list_jobs()["jobs"]
    return {
        # One reboot queued for the device, whatever its (random) job id.
        "jobs": [canonical({"status": j["status"], "target": j.get("targetSelection")}) for j in jobs],
        "audit": [canonical({"action": r["action"], "actor": r["actor"], "target": r["target"]})
                  for r in scan(world.audit)],
    }


def _keyed_command_request(world: Any) -> dict:
    """POST /commands as fleetctl sends it: with its Idempotency-Key, which its one re-send repeats (the
    Synchronous source re-sends this same event when told of a failure)."""
    from tests.commands.conftest import THING
    from tests.commands.test_issuer import api_event

    event = api_event("POST", "/commands", {"command": "reboot", "thing": THING})
    event["headers"]["Idempotency-Key"] = "5f0c6a1e9b7d4c2a8e3f1b6d0a9c7e21"
    return event


def command_issuer_scenario() -> Scenario:
    from tests.helpers import LambdaContext

    return Scenario(
        function="commands.issuer",
        source=Synchronous("API Gateway (POST /commands)", ok=lambda answer: answer["statusCode"] == 201),
        world=_issuer_world,
        event=_keyed_command_request,
        invoke=lambda world, event: world.handler.lambda_handler(event, LambdaContext()),
        state=_issuer_state,
        tolerated={"audit": (RECORDED, "every attempt is audited (`command.send`, and `command.send-failed` when "
                                       "it was not queued); fleetctl's re-send is the same request (same key)")},
        teardown=_teardown,
    )


# ---- commands: the daily rotation starter (EventBridge schedule, asynchronous) ----------------------


def _expiring_world(injector: Injector) -> Any:
    from commands.expiring import handler
    from shared import commands

    from tests.commands.conftest import THING
    from tests.commands.test_expiring import finding
    from tests.commands.test_rotation import POLICY, self_signed
    from tests.faults.injector import answer

    kms = client("kms")
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    env = Env({"SIGNING_KEY_ARN": key, "SIGNING_KEY_ID": commands.key_id(kms.get_public_key(KeyId=key)["PublicKey"]),
               "AUDIT_TABLE": AUDIT_TABLE, "DEVICE_POLICY_NAME": POLICY,
               "THING_ARN_PREFIX": f"arn:aws:iot:{REGION}:123456789012:thing/", "JOB_TIMEOUT_MINUTES": "60",
               "ROTATION_JOB_LIFETIME_SECONDS": str(7 * 24 * 3600)})
    handler._starter.cache_clear()
    _, audit = create_tables(resource("dynamodb"))
    iot = client("iot")
    iot.create_policy(policyName=POLICY, policyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}))
    iot.create_thing(thingName=THING)
    cert = iot.register_certificate_without_ca(certificatePem=self_signed(THING), status="ACTIVE")
    iot.attach_thing_principal(thingName=THING, principal=cert["certificateArn"])
    iot.attach_policy(policyName=POLICY, target=cert["certificateArn"])
    # Device Defender audit is not in moto: ListAuditFindings answered with its documented shape
    # (https://docs.aws.amazon.com/iot/latest/apireference/API_ListAuditFindings.html).
    injector.fakes["iot.ListAuditFindings"] = lambda request: answer(
        request, 200, {"findings": [finding(cert["certificateId"])]})
    injector.fakes["iot.CreateJob"] = create_job_fake(set())
    return SimpleNamespace(env=env, handler=handler, audit=audit, iot=iot)


def expiring_scenario() -> Scenario:
    from tests.helpers import LambdaContext

    scheduled = {"version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
                 "source": "aws.events", "account": "123456789012", "time": "2026-11-30T03:00:00Z",
                 "region": REGION, "resources": ["arn:aws:events:eu-west-1:123456789012:rule/fleetwarden-test-daily"],
                 "detail": {}}
    return Scenario(
        function="commands.expiring",
        # EventBridge invokes the function asynchronously: 2 retries, then the event is dropped or sent to a
        # DLQ; tomorrow's run finds the same finding again (the job id is per certificate and thing).
        source=AsyncInvoke("EventBridge schedule (async)"),
        world=_expiring_world,
        event=lambda world: scheduled,
        invoke=lambda world, event: world.handler.lambda_handler(event, LambdaContext()),
        # The job id derives from the certificate id, which differs per run (a fresh key): not compared.
        state=lambda world: {
            "jobs": [canonical({"status": j["status"]}) for j in world.iot.list_jobs()["jobs"]],
            "audit": [canonical({"action": r["action"], "target": r["target"]}) for r in scan(world.audit)]},
        teardown=_teardown,
    )


# ---- commands: certificate rotation (the IoT rule's Lambda action, asynchronous) --------------------


ROTATION_DATA_ENDPOINT = f"a1b2c3d4e5f6g7-ats.iot.{REGION}.amazonaws.com"


def _publish_fake(world: Any) -> Any:
    """iot-data Publish as the broker answers it on the account's data endpoint (moto serves iot-data only
    on its regional host): "HTTP 200 with an empty HTTP body" (https://docs.aws.amazon.com/iot/latest/
    apireference/API_iotdata_Publish.html); every applied request reaches the device's topic."""
    from urllib.parse import unquote, urlsplit

    from tests.faults.injector import answer

    def publish(request: Any) -> Any:
        topic = unquote(urlsplit(request.url).path.split("/topics/", 1)[1])
        body = request.body if isinstance(request.body, bytes) else (request.body or b"").encode()
        world.published.append((topic, json.loads(body)))
        return answer(request, 200)

    return publish


def _rotation_world(injector: Injector) -> Any:
    """What the Command stack creates for the rotation (the rotations table, the audit table, the device
    policy) and a device SN-0001 with its certificate, attached and carrying the policy."""
    from commands.rotation import handler

    from tests.commands.conftest import THING, iot_signs_the_csr
    from tests.commands.test_rotation import POLICY, ROTATIONS, create_rotations_table, make_csr, self_signed

    signs = iot_signs_the_csr()
    signs.__enter__()
    env = Env({"IOT_DATA_ENDPOINT": ROTATION_DATA_ENDPOINT, "ROTATIONS_TABLE": ROTATIONS, "AUDIT_TABLE": AUDIT_TABLE,
               "DEVICE_POLICY_NAME": POLICY})
    # The function's clients and tables are kept from run to run (they hold no moto state; building four
    # clients per run was most of its time), built once on the sweep's session, as a warm Lambda keeps them.
    if getattr(handler._rotator, "sweep_built", None) is not _shared_session_id():
        handler._rotator.cache_clear()
        handler._rotator()
        handler._rotator.sweep_built = _shared_session_id()
    dynamodb = resource("dynamodb")
    _, audit = create_tables(dynamodb)
    table = create_rotations_table(dynamodb)
    iot = client("iot")
    iot.create_policy(policyName=POLICY, policyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}))
    iot.create_thing(thingName=THING)
    old = iot.register_certificate_without_ca(certificatePem=self_signed(THING), status="ACTIVE")
    iot.attach_thing_principal(thingName=THING, principal=old["certificateArn"])
    iot.attach_policy(policyName=POLICY, target=old["certificateArn"])
    world = SimpleNamespace(env=env, handler=handler, audit=audit, table=table, iot=iot, thing=THING,
                            old=old["certificateId"], csr=make_csr(THING), published=[], signs=signs, pending=None)
    injector.fakes["iot-data-plane.Publish"] = _publish_fake(world)
    return world


def _rotation_pending_world(injector: Injector) -> Any:
    """The world after a clean request: the new certificate issued, attached and ACTIVE, the row `issued`,
    the device's answer sent (and read); the device has not confirmed yet."""
    from tests.commands.test_rotation import rule_event
    from tests.helpers import LambdaContext

    world = _rotation_world(injector)
    answer = world.handler.lambda_handler(rule_event("request", world.old, csr=world.csr, request_id="r-1"),
                                          LambdaContext())
    world.pending, world.published[:] = answer["certificate_id"], []
    return world


def _shared_session_id() -> Any:
    import boto3

    return boto3.DEFAULT_SESSION


def _rotation_teardown(world: Any) -> None:
    world.signs.__exit__(None, None, None)
    world.env.restore()


def _rotation_state(world: Any) -> dict[str, list[str]]:
    """Every certificate of the account (status, things, policies), the rotation row, the device's answers
    and the audit trail, with generated ids named by their role: <old>, <pending> (issued by an earlier
    request), <new> (the row's), anything else <other n> (a certificate no row knows: a defect)."""
    rows = scan(world.table)
    names = {world.old: "<old>"}
    if world.pending:
        names[world.pending] = "<pending>"
    for row in rows:
        if row.get("new_certificate_id") and row["new_certificate_id"] not in names:
            names[row["new_certificate_id"]] = "<new>"
    listed = world.iot.list_certificates()["certificates"]
    for n, cid in enumerate(sorted(c["certificateId"] for c in listed if c["certificateId"] not in names)):
        names[cid] = f"<other {n}>"
    pems = {}
    certificates = []
    for c in listed:
        arn = c["certificateArn"]
        pems[world.iot.describe_certificate(certificateId=c["certificateId"])["certificateDescription"]
             ["certificatePem"]] = f"<pem of {names[c['certificateId']]}>"
        certificates.append(canonical({
            "id": c["certificateId"], "status": c["status"],
            "things": world.iot.list_principal_things(principal=arn)["things"],
            "policies": [p["policyName"] for p in world.iot.list_attached_policies(target=arn)["policies"]]}))
    answers = [canonical({"topic": topic, "payload": {k: pems.get(v, v) if k == "certificate_pem" else v
                                                      for k, v in payload.items()}})
               for topic, payload in world.published]
    state = {
        "certificates": certificates,
        "rotation": items(world.table, drop=("requested_at", "issued_at", "confirmed_at", "csr_sha256",
                                             "public_key_sha256")),
        "device answers": answers,
        "audit": audit_records(world.audit),
    }
    return renamed(state, names)


# MQTT QoS 1 is at-least-once ("Sent at least one time, and then repeatedly until a PUBACK response is
# received", https://docs.aws.amazon.com/iot/latest/developerguide/mqtt.html#mqtt-qos): a device already
# takes a second copy of an answer; both copies are the same answer (request id, certificate).
ROTATION_ANSWER_COPIES = (HARMLESS, "the device's answer published again by the retry of an invocation whose "
                                    "Publish was applied (answer lost, or it died right after): the same answer "
                                    "(request id, certificate id and PEM); MQTT QoS 1 delivers at least once anyway, "
                                    "and the device agent acts on an answer only in the phase awaiting it")


def _rotation_scenario(name: str, world: Any, event: Any, **extra: Any) -> Scenario:
    from tests.helpers import LambdaContext

    return Scenario(
        function="commands.rotation",
        # The rule's Lambda action invokes asynchronously; the stack sets retry_attempts=2 and an on-failure
        # destination (stacks/commands/rotation.py).
        source=AsyncInvoke(f"IoT rule, {name} (async)"),
        world=world,
        event=event,
        invoke=lambda world, event: world.handler.lambda_handler(event, LambdaContext()),
        state=_rotation_state,
        tolerated={"device answers": ROTATION_ANSWER_COPIES, **extra.pop("tolerated", {})},
        teardown=_rotation_teardown,
        **extra,
    )


def rotation_request_scenario() -> Scenario:
    from tests.commands.test_rotation import rule_event

    return _rotation_scenario(
        "cmd/+/certs/request", _rotation_world,
        lambda world: rule_event("request", world.old, csr=world.csr, request_id="r-1"))


def rotation_confirm_scenario() -> Scenario:
    from tests.commands.test_rotation import rule_event

    return _rotation_scenario(
        "cmd/+/certs/confirm", _rotation_pending_world,
        lambda world: rule_event("confirm", world.pending, certificate_id=world.pending))


def rotation_supersede_scenario() -> Scenario:
    """A second request with another CSR while one is pending (the device lost the key it made): the pending
    certificate is retired and another issued."""
    from tests.commands.test_rotation import make_csr, rule_event

    return _rotation_scenario(
        "cmd/+/certs/request, another CSR while one is pending", _rotation_pending_world,
        lambda world: rule_event("request", world.old, csr=make_csr(world.thing), request_id="r-2"))


def rotation_refused_scenario() -> Scenario:
    """A CSR for another thing's name: refused (`wrong-cn`), audited and answered on `rejected`."""
    from tests.commands.conftest import OTHER
    from tests.commands.test_rotation import make_csr, rule_event

    return _rotation_scenario(
        "cmd/+/certs/request, refused", _rotation_world,
        lambda world: rule_event("request", world.old, csr=make_csr(OTHER), request_id="r-1"),
        tolerated={"audit": (RECORDED, "every refused attempt is audited (`certificate.rotation-request-refused`): "
                                       "a retry after the record was written records it again")})


# ---- commands: the signing key's public key (CloudFormation custom resource, Create) ---------------


class ResponseBucket:
    """CloudFormation's presigned response URL: a real HTTP server on 127.0.0.1 (one per session)
    recording every PUT (the request id is in the path, as in the presigned S3 key)."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.puts: list[tuple[str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.puts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


_response_bucket = None


def response_bucket() -> ResponseBucket:
    global _response_bucket
    if _response_bucket is None:
        _response_bucket = ResponseBucket()
    return _response_bucket


STACK_ID = "arn:aws:cloudformation:eu-west-1:123456789012:stack/fleetwarden-dev-commands/5b1e3c90-8f1a-11ef-9f2e-0a1b2c3d4e5f"


def _public_key_world(injector: Injector) -> Any:
    from commands.public_key import handler

    kms = client("kms")
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    bucket = response_bucket()
    bucket.puts[:] = []
    # The response PUT is one more numbered call of the sweep (urllib, not boto3).
    send = handler.send
    handler.send = injector.wrap("cloudformation.PUT response", send, lambda: TimeoutError("timed out"))
    return SimpleNamespace(env=Env({}), handler=handler, send=send, kms=kms, key=key, bucket=bucket)


def _public_key_event(world: Any) -> dict:
    """The Create request as CloudFormation sends it ("Create" request type, crpg-ref-requesttypes-create.html):
    the resource's properties are the template's, ServiceToken included."""
    request_id = "e2fc8f5c-0a1b-4c5d-9e8f-7a6b5c4d3e2f"
    function = "arn:aws:lambda:eu-west-1:123456789012:function:fleetwarden-dev-commands-PublicKeyReader"
    path = f"/{STACK_ID.replace('/', '%2F')}%7CPublicKey%7C{request_id}?X-Amz-Expires=7200&X-Amz-Signature=0f1e2d"
    return {"RequestType": "Create", "ServiceToken": function, "ResponseURL": world.bucket.url + path,
            "StackId": STACK_ID, "RequestId": request_id, "LogicalResourceId": "PublicKey",
            "ResourceType": "AWS::CloudFormation::CustomResource",
            "ResourceProperties": {"ServiceToken": function, "KeyArn": world.key}}


def _public_key_invoke(world: Any, event: dict) -> str | None:
    from tests.helpers import LambdaContext

    world.handler.lambda_handler(event, LambdaContext())
    sent = [body for _, body in world.bucket.puts if body["RequestId"] == event["RequestId"]]
    return sent[0]["Status"] if sent else None


def _public_key_state(world: Any) -> dict[str, list[str]]:
    from shared.command_jobs import KmsSigner

    with INJECTOR_PAUSED():
        signer = KmsSigner(world.kms, world.key)
        pem, key_id = signer.public_pem(), signer.key_id
    names = {pem: "<the key's PEM>", key_id: "<its key id>"}

    def named(body: dict) -> dict:
        data = {k: names.get(v, v) for k, v in (body.get("Data") or {}).items()}
        return {**body, "Data": data, "RequestId": "<request>"}

    first: dict[str, dict] = {}
    for _, body in world.bucket.puts:
        first.setdefault(body["RequestId"], body)
    return renamed({
        # What CloudFormation read for each request (the first response; a second one is identical).
        "deployments": [canonical({"Status": b["Status"], "Reason": b["Reason"]}) for b in first.values()],
        "stack outputs": [canonical(named(b)["Data"]) for b in first.values() if b["Status"] == "SUCCESS"],
        "response PUTs": [canonical(named(body)) for _, body in world.bucket.puts],
    }, {world.key: "<key arn>"})


def INJECTOR_PAUSED() -> Any:
    from tests.faults.sweep import INJECTOR

    return INJECTOR.paused()


def public_key_scenario() -> Scenario:
    def teardown(world: Any) -> None:
        world.handler.send = world.send
        world.env.restore()

    return Scenario(
        function="commands.public_key",
        source=CustomResource(),
        world=_public_key_world,
        event=_public_key_event,
        invoke=_public_key_invoke,
        state=_public_key_state,
        tolerated={
            "deployments": (RECORDED, "GetPublicKey failed (every attempt botocore made): answered FAILED with the "
                                      "reason (\"GetPublicKey failed: <error>\", in the stack events) rather than "
                                      "leave CloudFormation waiting an hour; the deployment rolls back and the "
                                      "operator's next deploy completes it"),
            "response PUTs": (HARMLESS, "the same response PUT twice to the presigned URL (Lambda's retry after the "
                                        "first PUT's answer was lost or the invocation died): byte-identical bodies, "
                                        "so whichever CloudFormation reads says the same (what it does with a second "
                                        "response is not documented: unverified)")},
        teardown=teardown,
    )


# ---- telemetry: the Firehose transform (no AWS call: swept with zero calls) ------------------------


def _transform_world(injector: Injector) -> Any:
    from telemetry.transform import handler

    return SimpleNamespace(env=Env({}), handler=handler, answers=[])


def _transform_invoke(world: Any, event: dict) -> dict:
    from tests.helpers import LambdaContext

    answer = world.handler.lambda_handler(event, LambdaContext())
    world.answers.append(answer)
    return answer


def transform_scenario() -> Scenario:
    from tests.telemetry.test_transform import envelope, firehose_event, record

    return Scenario(
        function="telemetry.transform",
        source=FirehoseTransform(),
        world=_transform_world,
        event=lambda world: firehose_event([record(envelope(), "r-0"),
                                            record(envelope(thing="sensor-0043", client_id="sensor-0043"), "r-1")]),
        invoke=_transform_invoke,
        state=lambda world: {"records": [canonical(r) for a in world.answers for r in a["records"]]},
        teardown=_teardown,
    )


SCENARIOS = [hook_scenario, token_api_scenario, auth_failures_scenario, auto_response_scenario,
             device_admin_scenario, device_admin_quarantine_scenario, detector_scenario, alerts_api_scenario,
             alerts_list_scenario, alert_processor_scenario, transform_scenario, command_issuer_scenario,
             expiring_scenario, rotation_request_scenario, rotation_confirm_scenario, rotation_supersede_scenario,
             rotation_refused_scenario, public_key_scenario]
