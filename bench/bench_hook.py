"""The pre-provisioning hook against IoT's 5 seconds: its init, its invocation, its worst case.

Usage: .venv/bin/python bench/bench_hook.py [--runs 7]

1. Init: a fresh interpreter imports identity.provisioning_hook.handler as Lambda's init does
   (AWS_LAMBDA_FUNCTION_NAME set, so boto3 and the clients are built at import; dummy
   credentials in the environment, as Lambda provides them; no network). Reports the handler's
   own INIT_SECONDS (what it subtracts from its budget on an on-demand cold start) and the
   interpreter's wall time including Python's start. Median of --runs after a warm-up.
2. Invocation: the real handler under moto, warm, allowed path (3 AWS calls, in-process: real
   calls add their network time, which the timeouts bound).
3. The worst case, from the handler's constants: calls x (connect + read timeout), one attempt
   each, plus the reserve, plus the measured init.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAMBDAS = ROOT / "lambdas"
ENV = {
    "PATH": os.environ.get("PATH", ""),
    "PYTHONPATH": str(LAMBDAS),
    "PYTHONDONTWRITEBYTECODE": "1",  # the handler's own modules from source, as from a Lambda asset
    "AWS_LAMBDA_FUNCTION_NAME": "bench-hook",
    "AWS_REGION": "eu-west-1",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_SESSION_TOKEN": "bench",
    "AWS_EC2_METADATA_DISABLED": "true",
    "TOKENS_TABLE": "bench-tokens",
    "AUDIT_TABLE": "bench-audit",
    "POWERTOOLS_SERVICE_NAME": "provisioning-hook",
    "POWERTOOLS_METRICS_NAMESPACE": "Fleetwarden",
}
PROBE = ("import time; t = time.monotonic(); from identity.provisioning_hook import handler as h; "
         "print(h.INIT_SECONDS, h._dependencies.cache_info().currsize)")


def init_once() -> tuple[float, float]:
    """(the handler's INIT_SECONDS, the whole interpreter's wall time), in seconds."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PROBE], env=ENV, cwd=LAMBDAS, capture_output=True,
                         text=True, check=True).stdout.split()
    wall = time.perf_counter() - started
    if out[1] != "1":
        raise RuntimeError("the clients were not built at init")
    return float(out[0]), wall


def invocation_ms(runs: int) -> list[float]:
    """Warm allowed invocations of the real handler under moto, in ms."""
    sys.path[:0] = [str(ROOT), str(LAMBDAS)]
    os.environ.update({k: v for k, v in ENV.items() if k.startswith(("AWS_", "TOKENS", "AUDIT"))})
    os.environ.pop("AWS_LAMBDA_FUNCTION_NAME")  # build the clients inside moto, not at import
    import boto3
    from moto import mock_aws

    from identity.provisioning_hook import handler
    from identity.tokens import hash_token, new_token
    from tests.helpers import AUDIT_TABLE, TOKENS_TABLE, LambdaContext, create_tables

    class Context(LambdaContext):
        def get_remaining_time_in_millis(self) -> int:
            return 4000

    os.environ.update(TOKENS_TABLE=TOKENS_TABLE, AUDIT_TABLE=AUDIT_TABLE)  # the tables create_tables makes
    handler.logger.registered_handler.setStream(open(os.devnull, "w"))  # log lines: not measured here
    samples = []
    with mock_aws():
        tokens, _ = create_tables(boto3.resource("dynamodb"))
        for i in range(runs + 1):
            token = new_token()
            now = int(time.time())
            tokens.put_item(Item={"token_hash": hash_token(token), "serial": f"bench-{i:04d}",
                                  "issued_by": "bench", "issued_at": now, "expires_at": now + 900})
            event = {"claimCertificateId": "c3" * 32, "certificateId": f"{i:02x}" * 32,
                     "certificatePem": "-----BEGIN CERTIFICATE-----\n...", "clientId": f"claim-{i}",
                     "templateArn": "arn:aws:iot:eu-west-1:123456789012:provisioningtemplate/bench",
                     "parameters": {"SerialNumber": f"bench-{i:04d}", "ProvisioningToken": token}}
            stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # the metrics (EMF) it prints
            try:
                started = time.perf_counter()
                answer = handler.lambda_handler(event, Context())
            finally:
                sys.stdout = stdout
            elapsed = (time.perf_counter() - started) * 1000
            if not answer["allowProvisioning"]:
                raise RuntimeError(f"denied: {answer}")
            if i:  # the first one builds the clients
                samples.append(elapsed)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    sys.path.insert(0, str(LAMBDAS))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d')}; median (min-max) of {args.runs} runs after a warm-up")

    init_once()  # warm-up: disk cache
    inits, walls = zip(*(init_once() for _ in range(args.runs)))
    init = statistics.median(inits)
    print(f"init (import + boto3 + clients), INIT_SECONDS: {init * 1000:.0f} ms "
          f"({min(inits) * 1000:.0f}-{max(inits) * 1000:.0f})")
    print(f"interpreter start to init done (wall):         {statistics.median(walls) * 1000:.0f} ms "
          f"({min(walls) * 1000:.0f}-{max(walls) * 1000:.0f})")

    invocations = invocation_ms(args.runs)
    print(f"warm invocation, allowed, moto in-process:      {statistics.median(invocations):.1f} ms "
          f"({min(invocations):.1f}-{max(invocations):.1f})")

    os.environ.pop("AWS_LAMBDA_FUNCTION_NAME", None)
    from identity.provisioning_hook import handler

    one = handler.ONE_ATTEMPT
    print(f"one attempt per call: {handler.CONNECT_TIMEOUT} s connect + {handler.READ_TIMEOUT} s read = {one:.2f} s")
    for calls, what in ((3, "first use"), (4, "retry (+ DescribeCertificate)")):
        worst = calls * one + handler.RESERVE
        print(f"worst case, {what}: {calls} x {one:.2f} + reserve {handler.RESERVE} = {worst:.1f} s warm; "
              f"+ init {init:.2f} = {worst + init:.2f} s cold (deadline {handler.IOT_DEADLINE:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
