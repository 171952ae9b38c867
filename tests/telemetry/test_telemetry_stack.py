"""Telemetry templates (ingest stack): the data buckets, the Basic Ingest rule, the validating
Firehose delivery (partitions, GZIP JSON lines by default, Parquet conversion as an option), the Glue
table with partition projection, the
Athena workgroup and named queries, and least-privilege roles."""

import json

from lambdas.telemetry.layout import s3_prefix
from stacks.telemetry.catalog import COLUMNS
from tests.infra.synth import actions_of, resources, role_actions, topic_rules


def ingest(s):
    return s.template_json(s.stacks.ingest)


# --- buckets (telemetry and alerts, both under the ingest stack's data key) -----------------

def test_data_buckets_use_the_data_key_and_log_access(dev):
    buckets = resources(ingest(dev), "AWS::S3::Bucket")
    assert len(buckets) == 2
    for bucket in buckets.values():
        rule = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        assert rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]["Fn::GetAtt"][0].startswith("DataKey")
        assert "LoggingConfiguration" in bucket["Properties"]


def test_telemetry_ages_to_infrequent_access_and_alerts_are_kept_longer(dev):
    buckets = resources(ingest(dev), "AWS::S3::Bucket")
    telemetry = next(b for k, b in buckets.items() if k.startswith("TelemetryData"))
    alerts = next(b for k, b in buckets.items() if k.startswith("AlertData"))
    t_rules = telemetry["Properties"]["LifecycleConfiguration"]["Rules"]
    t_rule = t_rules[0]
    a_rule = alerts["Properties"]["LifecycleConfiguration"]["Rules"][0]
    assert t_rule["Transitions"] == [{"StorageClass": "STANDARD_IA", "TransitionInDays": 30},
                                     {"StorageClass": "GLACIER_IR", "TransitionInDays": 90}]
    assert t_rule["ExpirationInDays"] == 365 and "Prefix" not in t_rule
    # Athena's results are kept a week, whatever the telemetry's retention.
    [results] = [r for r in t_rules if r.get("Prefix") == "athena-results/"]
    assert results["ExpirationInDays"] == 7 and results["Status"] == "Enabled"
    assert len(t_rules) == 2
    assert a_rule["ExpirationInDays"] == 2557 > t_rule["ExpirationInDays"]


# --- rules ---------------------------------------------------------------------------------

def test_every_rule_uses_sql_2016_and_has_an_error_action(dev):
    found = topic_rules(ingest(dev))
    assert set(found) == {"fleetwarden_dev_telemetry", "fleetwarden_dev_alerts"}
    for name, payload in found.items():
        assert payload["AwsIotSqlVersion"] == "2016-03-23", name
        error = payload["ErrorAction"]["S3"]
        assert error["Key"].startswith(f"rule-errors/{name}/"), name
        assert error["BucketName"]["Ref"].startswith("AlertData")


def test_telemetry_rule_is_basic_ingest_into_firehose_with_identity_fields(dev):
    payload = topic_rules(ingest(dev))["fleetwarden_dev_telemetry"]
    sql = payload["Sql"]
    for part in ("encode(*, 'base64') AS payload", "topic(2) AS thing", "clientid() AS client_id",
                 "principal() AS principal", "timestamp() AS received_at", "FROM 'dt/+/telemetry'"):
        assert part in sql
    # One action, even with the built-in detector on (default "both"): the transform feeds it.
    assert [next(iter(action)) for action in payload["Actions"]] == ["Firehose"]
    # The device policy publishes to exactly this rule's Basic Ingest topic.
    policy = next(r for k, r in dev.template_json(dev.stacks.identity)["Resources"].items()
                  if k.startswith("RegistryDevicePolicy"))
    assert "$aws/rules/fleetwarden_dev_telemetry/dt/${iot:Connection.Thing.ThingName}/telemetry" in \
        json.dumps(policy["Properties"]["PolicyDocument"])


def test_the_transform_feeds_the_detector_stream_and_may_only_put_records(dev):
    template = ingest(dev)
    transform = next(f for k, f in resources(template, "AWS::Lambda::Function").items()
                     if k.startswith("TelemetryTransform"))
    stream = transform["Properties"]["Environment"]["Variables"]["OBSERVATION_STREAM"]
    assert stream["Ref"].startswith("Observations")
    actions = role_actions(template, "TelemetryTransform")
    assert "kms:GenerateDataKey" in actions
    assert {a for a in actions if a.startswith("kinesis:")} == {"kinesis:PutRecords", "kinesis:ListShards"}
    # Once per batch: Powertools idempotency records in their own table, expiring.
    table_ref = transform["Properties"]["Environment"]["Variables"]["BATCH_TABLE"]["Ref"]
    table = resources(template, "AWS::DynamoDB::Table")[table_ref]["Properties"]
    assert table["TableName"] == "fleetwarden-dev-telemetry-sent-batches"
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert {a for a in actions if a.startswith("dynamodb:")} == {
        "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}


def test_telemetry_rule_role_only_delivers(dev):
    assert role_actions(ingest(dev), "TelemetryRuleRole") <= {
        "firehose:PutRecord", "firehose:PutRecordBatch", "kinesis:PutRecord", "s3:PutObject",
        "kms:GenerateDataKey", "kms:Encrypt"}


# --- Firehose ------------------------------------------------------------------------------

def test_firehose_partitions_by_day_hour_shard_writes_gzip_json_lines_and_validates(dev):
    stream = next(iter(resources(ingest(dev), "AWS::KinesisFirehose::DeliveryStream").values()))["Properties"]
    assert stream["DeliveryStreamEncryptionConfigurationInput"]["KeyType"] == "CUSTOMER_MANAGED_CMK"
    s3_config = stream["ExtendedS3DestinationConfiguration"]
    # The default telemetry_format json: no conversion (billed per 5 KB record), GZIP JSON lines.
    assert s3_config["CompressionFormat"] == "GZIP" and "DataFormatConversionConfiguration" not in s3_config
    assert s3_config["EncryptionConfiguration"]["KMSEncryptionConfig"]["AWSKMSKeyARN"]["Fn::GetAtt"][0].startswith("DataKey")
    assert s3_config["DynamicPartitioningConfiguration"]["Enabled"] is True
    assert s3_config["Prefix"] == ("telemetry/day=!{partitionKeyFromLambda:day}/"
                                   "hour=!{partitionKeyFromLambda:hour}/shard=!{partitionKeyFromLambda:shard}/")
    assert s3_config["ErrorOutputPrefix"] == (
        "telemetry-errors/!{firehose:error-output-type}/day=!{timestamp:yyyy-MM-dd}/")
    assert s3_config["BufferingHints"] == {"IntervalInSeconds": 900, "SizeInMBs": 64}

    processor = s3_config["ProcessingConfiguration"]["Processors"][0]
    assert processor["Type"] == "Lambda"
    params = {p["ParameterName"]: p["ParameterValue"] for p in processor["Parameters"]}
    assert params["LambdaArn"]["Fn::GetAtt"][0].startswith("TelemetryTransform")
    assert (params["BufferIntervalInSeconds"], params["BufferSizeInMBs"]) == ("30", "1")
    assert s3_config["CloudWatchLoggingOptions"]["Enabled"] is True


def test_the_transform_and_the_projection_use_the_same_shard_count(dev):
    template = ingest(dev)
    transform = next(f for k, f in resources(template, "AWS::Lambda::Function").items()
                     if k.startswith("TelemetryTransform"))
    assert transform["Properties"]["Environment"]["Variables"]["TELEMETRY_SHARDS"] == "16"
    [table] = resources(template, "AWS::Glue::Table").values()
    assert table["Properties"]["TableInput"]["Parameters"]["projection.shard.range"] == "0,15"


def test_glue_table_is_the_transforms_json_line_with_partition_projection(dev):
    template = ingest(dev)
    [database] = resources(template, "AWS::Glue::Database").values()
    assert database["Properties"]["DatabaseInput"]["Name"] == "fleetwarden_dev_telemetry"
    [table] = resources(template, "AWS::Glue::Table").values()
    assert not resources(template, "AWS::Glue::Crawler")  # projection: nothing registers partitions
    props = table["Properties"]
    assert props["DatabaseName"] == "fleetwarden_dev_telemetry"
    table_input = props["TableInput"]
    assert table_input["Name"] == "telemetry" and table_input["TableType"] == "EXTERNAL_TABLE"
    columns = table_input["StorageDescriptor"]["Columns"]
    assert [(c["Name"], c["Type"]) for c in columns] == [
        ("thing", "string"), ("client_id", "string"), ("principal", "string"), ("received_at", "bigint"),
        ("ts", "string"), ("seq", "bigint"), ("metrics", "map<string,double>"), ("raw", "string")]
    assert [c[0] for c in COLUMNS] == [c["Name"] for c in columns]
    assert table_input["PartitionKeys"] == [{"Name": n, "Type": "string"} for n in ("day", "hour", "shard")]
    descriptor = table_input["StorageDescriptor"]
    assert descriptor["SerdeInfo"] == {"SerializationLibrary": "org.apache.hive.hcatalog.data.JsonSerDe"}
    assert descriptor["InputFormat"] == "org.apache.hadoop.mapred.TextInputFormat"
    assert table_input["Parameters"]["compressionType"] == "gzip"
    assert json.dumps(descriptor["Location"]).count("/telemetry/") == 1
    params = table_input["Parameters"]
    assert params["projection.enabled"] == "true"
    assert (params["projection.day.type"], params["projection.day.format"]) == ("date", "yyyy-MM-dd")
    assert params["projection.day.range"].endswith(",NOW")
    assert (params["projection.hour.type"], params["projection.hour.range"], params["projection.hour.digits"]) == (
        "integer", "0,23", "2")
    assert (params["projection.shard.type"], params["projection.shard.digits"]) == ("integer", "2")
    location = json.dumps(params["storage.location.template"])
    assert "/telemetry/day=${day}/hour=${hour}/shard=${shard}/" in location
    # The template names the same prefix the transform's keys make Firehose write.
    keys = {"day": "2025-05-01", "hour": "07", "shard": "03"}
    assert s3_prefix(keys) in location.replace("${day}", "2025-05-01").replace("${hour}", "07").replace(
        "${shard}", "03")


def test_athena_workgroup_is_enforced_encrypted_limited_and_has_the_named_queries(dev):
    template = ingest(dev)
    [workgroup] = resources(template, "AWS::Athena::WorkGroup").values()
    props = workgroup["Properties"]
    assert props["Name"] == "fleetwarden-dev-telemetry"
    config = props["WorkGroupConfiguration"]
    assert config["EnforceWorkGroupConfiguration"] is True
    assert config["BytesScannedCutoffPerQuery"] == 10_240 * 1_000_000
    assert config["PublishCloudWatchMetricsEnabled"] is True
    results = config["ResultConfiguration"]
    assert results["EncryptionConfiguration"]["EncryptionOption"] == "SSE_KMS"
    assert results["EncryptionConfiguration"]["KmsKey"]["Fn::GetAtt"][0].startswith("DataKey")
    assert "/athena-results/" in json.dumps(results["OutputLocation"])
    queries = {q["Properties"]["Name"]: q["Properties"] for q in resources(template, "AWS::Athena::NamedQuery").values()}
    assert set(queries) == {"last-report-per-device", "devices-silent-for-24-hours"}
    for query in queries.values():
        assert (query["Database"], query["WorkGroup"]) == ("fleetwarden_dev_telemetry", "fleetwarden-dev-telemetry")
        assert '"fleetwarden_dev_telemetry"."telemetry"' in query["QueryString"]
        assert "WHERE day >=" in query["QueryString"]  # always pruned by day
    assert "max_by(metrics, received_at)" in queries["last-report-per-device"]["QueryString"]
    assert "interval '24' hour" in queries["devices-silent-for-24-hours"]["QueryString"]


def test_firehose_role_writes_only_its_prefixes_and_invokes_only_the_transform(dev):
    policies = [p for p in resources(ingest(dev), "AWS::IAM::Policy").values()
                if any(r["Ref"].startswith("TelemetryDeliveryRole") for r in p["Properties"]["Roles"])]
    statements = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
    puts = next(s for s in statements if "s3:PutObject" in actions_of(s))
    text = json.dumps(puts["Resource"])
    for prefix in ("/telemetry/*", "/telemetry-errors/*"):
        assert prefix in text
    assert '"/*"' not in text and "athena-results" not in text
    # No conversion by default: Firehose never reads the Glue table.
    assert not {a for s in statements for a in actions_of(s) if a.startswith("glue:")}
    invoke = next(s for s in statements if "lambda:InvokeFunction" in actions_of(s))
    assert "TelemetryTransform" in json.dumps(invoke["Resource"])


def test_telemetry_format_parquet_converts_against_the_same_table(tmp_path):
    """The option for fleets that query a lot: Firehose converts each JSON line to a Parquet row
    (Snappy) against the Glue table, whose schema its role may read; the same partitions."""
    from tests.infra.synth import synthesise

    s = synthesise("dev", tmp_path, {"telemetry_format": "parquet"})
    template = ingest(s)
    stream = next(iter(resources(template, "AWS::KinesisFirehose::DeliveryStream").values()))["Properties"]
    s3_config = stream["ExtendedS3DestinationConfiguration"]
    assert s3_config["CompressionFormat"] == "UNCOMPRESSED"  # the Parquet is Snappy-compressed instead
    assert s3_config["Prefix"].startswith("telemetry/day=")  # the same partitions
    conversion = s3_config["DataFormatConversionConfiguration"]
    assert conversion["Enabled"] is True
    assert conversion["InputFormatConfiguration"]["Deserializer"] == {"OpenXJsonSerDe": {
        "CaseInsensitive": False, "ConvertDotsInJsonKeysToUnderscores": False}}
    assert conversion["OutputFormatConfiguration"]["Serializer"] == {"ParquetSerDe": {"Compression": "SNAPPY"}}
    schema = conversion["SchemaConfiguration"]
    assert (schema["DatabaseName"], schema["TableName"], schema["VersionId"]) == (
        "fleetwarden_dev_telemetry", "telemetry", "LATEST")
    assert schema["RoleARN"]["Fn::GetAtt"][0].startswith("TelemetryDeliveryRole")
    [table] = resources(template, "AWS::Glue::Table").values()
    table_input = table["Properties"]["TableInput"]
    descriptor = table_input["StorageDescriptor"]
    assert descriptor["SerdeInfo"]["SerializationLibrary"] == (
        "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe")
    assert descriptor["InputFormat"].endswith("MapredParquetInputFormat")
    assert [c["Name"] for c in descriptor["Columns"]] == [c[0] for c in COLUMNS]
    assert table_input["Parameters"]["projection.enabled"] == "true"
    assert {a for a in role_actions(template, "TelemetryDeliveryRole") if a.startswith("glue:")} == {
        "glue:GetTable", "glue:GetTableVersion", "glue:GetTableVersions"}
    policies = [p for p in resources(template, "AWS::IAM::Policy").values()
                if any(r["Ref"].startswith("TelemetryDeliveryRole") for r in p["Properties"]["Roles"])]
    glue = next(st for p in policies for st in p["Properties"]["PolicyDocument"]["Statement"]
                if "glue:GetTable" in actions_of(st))
    assert "table/fleetwarden_dev_telemetry/telemetry" in json.dumps(glue["Resource"])
