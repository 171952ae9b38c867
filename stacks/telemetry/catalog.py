"""Telemetry, queryable where it lands: the Glue table Firehose converts to (and Athena reads) and the
Athena workgroup operators query it through.

* Glue database `<prefix>_telemetry` (underscores: Athena names), table `telemetry`: GZIP JSON
  lines (telemetry_format json, the default) or Parquet (telemetry_format parquet) under
  s3://<bucket>/telemetry/, partitioned by (day, hour, shard) with partition projection
  (telemetry.layout.projection_parameters): no crawler, no MSCK REPAIR, a new hour or shard is
  found the moment Firehose writes it.
* Athena workgroup `<prefix>-telemetry`: its settings are enforced (a client cannot send results
  elsewhere or unencrypted), results SSE-KMS with the data key under athena-results/ (expired
  after 7 days by the bucket's lifecycle), a bytes-scanned cutoff per query, CloudWatch metrics.
* Named queries for the common questions: the last report of every device, devices silent for
  N hours.
"""

from __future__ import annotations

from aws_cdk import Aws
from aws_cdk import aws_athena as athena
from aws_cdk import aws_glue as glue
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from lambdas.telemetry.layout import DATA_PREFIX, PARTITION_COLUMNS, projection_parameters

TABLE = "telemetry"
RESULTS_PREFIX = "athena-results/"
RESULTS_DAYS = 7
# The first day projection offers. Days before any data simply read nothing.
FIRST_DAY = "2024-01-01"

# The table's columns: exactly the keys of the transform's line (telemetry/transform/transform.py).
# ts is the device's own text (epoch seconds, ms or ISO-8601: one column type for all); raw is the
# payload, only when an integer metric does not fit a double exactly.
COLUMNS = (
    ("thing", "string", "IoT thing name (= MQTT client id)"),
    ("client_id", "string", "MQTT client id of the connection"),
    ("principal", "string", "certificate id of the connection"),
    ("received_at", "bigint", "epoch ms IoT received the message (rule timestamp())"),
    ("ts", "string", "the device's timestamp, as it wrote it"),
    ("seq", "bigint", "the device's sequence number"),
    ("metrics", "map<string,double>", "metric name -> value"),
    ("raw", "string", "the whole payload when an integer metric is beyond 2^53, else null"),
)


# How Athena reads each telemetry_format: Parquet, or the transform's JSON lines GZIP-compressed
# with the Hive JSON SerDe ("OpenX JSON SerDe", Athena user guide: with OpenX "the number of
# results and their values can be non-deterministic ... use the Hive JSON SerDe").
FORMATS = {
    "parquet": {"parameters": {"classification": "parquet", "parquet.compression": "SNAPPY"},
                "input": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                "output": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
                "serde": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"},
    "json": {"parameters": {"classification": "json", "compressionType": "gzip"},
             "input": "org.apache.hadoop.mapred.TextInputFormat",
             "output": "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
             "serde": "org.apache.hive.hcatalog.data.JsonSerDe"},
}


def database_name(prefix: str) -> str:
    return f"{prefix.replace('-', '_')}_telemetry"


def workgroup_name(prefix: str) -> str:
    return f"{prefix}-telemetry"


def last_report_sql(database: str, days: int = 7) -> str:
    """The latest row of every device that reported in the last `days` days."""
    return (f'SELECT thing, from_unixtime(max(received_at) / 1000.0) AS last_received, '
            f'max_by(seq, received_at) AS seq, max_by(ts, received_at) AS ts, '
            f'max_by(metrics, received_at) AS metrics\n'
            f'FROM "{database}"."{TABLE}"\n'
            f"WHERE day >= date_format(current_date - interval '{days}' day, '%Y-%m-%d')\n"
            f'GROUP BY thing ORDER BY thing')


def silent_sql(database: str, hours: int = 24, days: int = 7) -> str:
    """Devices that reported in the last `days` days but not in the last `hours` hours (a device
    silent for longer than `days` is not in the telemetry: the registry knows it)."""
    return (f'SELECT thing, from_unixtime(max(received_at) / 1000.0) AS last_received\n'
            f'FROM "{database}"."{TABLE}"\n'
            f"WHERE day >= date_format(current_date - interval '{days}' day, '%Y-%m-%d')\n"
            f'GROUP BY thing\n'
            f"HAVING max(received_at) < to_unixtime(current_timestamp - interval '{hours}' hour) * 1000\n"
            f'ORDER BY last_received')


class TelemetryCatalog(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, prefix: str, bucket: s3.IBucket, data_key: kms.IKey,
        shards: int, bytes_scanned_limit_mb: int, file_format: str = "json",
    ) -> None:
        super().__init__(scope, construct_id)
        self.database_name = database_name(prefix)
        self.table_name = TABLE
        self.database = glue.CfnDatabase(
            self, "Database", catalog_id=Aws.ACCOUNT_ID,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=self.database_name, description="Fleetwarden device telemetry (projected)"))
        self.table = glue.CfnTable(
            self, "Table", catalog_id=Aws.ACCOUNT_ID, database_name=self.database_name,
            table_input=glue.CfnTable.TableInputProperty(
                name=TABLE,
                description="One row per accepted telemetry message",
                table_type="EXTERNAL_TABLE",
                parameters={**FORMATS[file_format]["parameters"],
                            **projection_parameters(f"s3://{bucket.bucket_name}", shards, FIRST_DAY)},
                partition_keys=[glue.CfnTable.ColumnProperty(name=name, type="string")
                                for name in PARTITION_COLUMNS],
                storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                    columns=[glue.CfnTable.ColumnProperty(name=n, type=t, comment=c) for n, t, c in COLUMNS],
                    location=f"s3://{bucket.bucket_name}/{DATA_PREFIX}",
                    input_format=FORMATS[file_format]["input"],
                    output_format=FORMATS[file_format]["output"],
                    serde_info=glue.CfnTable.SerdeInfoProperty(
                        serialization_library=FORMATS[file_format]["serde"],
                        parameters=FORMATS[file_format].get("serde_parameters")),
                ),
            ),
        )
        self.table.node.add_dependency(self.database)
        catalog = f"arn:{Aws.PARTITION}:glue:{Aws.REGION}:{Aws.ACCOUNT_ID}"
        self.table_arns = [f"{catalog}:catalog", f"{catalog}:database/{self.database_name}",
                           f"{catalog}:table/{self.database_name}/{TABLE}"]

        self.workgroup_name = workgroup_name(prefix)
        self.workgroup = athena.CfnWorkGroup(
            self, "WorkGroup",
            name=self.workgroup_name,
            description="Fleetwarden telemetry queries (results encrypted, expire after 7 days)",
            state="ENABLED",
            recursive_delete_option=False,
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                enforce_work_group_configuration=True,
                publish_cloud_watch_metrics_enabled=True,
                bytes_scanned_cutoff_per_query=bytes_scanned_limit_mb * 1_000_000,
                requester_pays_enabled=False,
                engine_version=athena.CfnWorkGroup.EngineVersionProperty(selected_engine_version="AUTO"),
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=f"s3://{bucket.bucket_name}/{RESULTS_PREFIX}",
                    expected_bucket_owner=Aws.ACCOUNT_ID,
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(
                        encryption_option="SSE_KMS", kms_key=data_key.key_arn),
                ),
            ),
        )
        self.named_queries = []
        for construct_name, name, description, sql in (
            ("LastReportQuery", "last-report-per-device",
             "The latest report of every device that reported in the last 7 days", last_report_sql(
                 self.database_name)),
            ("SilentDevicesQuery", "devices-silent-for-24-hours",
             "Devices that reported in the last 7 days but not in the last 24 hours (edit the hours)",
             silent_sql(self.database_name)),
        ):
            query = athena.CfnNamedQuery(
                self, construct_name, name=name, description=description, database=self.database_name,
                work_group=self.workgroup_name, query_string=sql)
            query.node.add_dependency(self.workgroup, self.table)
            self.named_queries.append(query)
