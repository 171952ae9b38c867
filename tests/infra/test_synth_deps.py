"""`make synth` installs only requirements.txt: the stacks must import without the Lambda
runtime's libraries (Powertools, pydantic, boto3), which live in the AWS-managed layer and the
Lambda runtime, not in the synthesis environment."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_ONLY = ("aws_lambda_powertools", "pydantic", "boto3", "botocore")


def test_the_app_imports_without_the_lambda_runtime_libraries():
    # A None entry in sys.modules makes `import x` raise ImportError, as if x were not installed.
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in RUNTIME_ONLY)
    code = f"import sys; {blocked}; sys.path.insert(0, {str(ROOT)!r}); import app, stacks.fleet_app"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
