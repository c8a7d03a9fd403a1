"""The evidence pack's checklist: each requirement, how sovllm meets it, the tests that check it.

A row names the tests in this repository that check it (`tests/...py::test_name`; a unit test
keeps the list true) and the kinds of live evidence (`evidence.py`) that show it on this
installation. A row whose evidence is missing is printed in red, never filled in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    ref: str
    """e.g. "GDPR Art. 5(1)(e)"."""
    framework: str
    requirement: str
    how: str
    tests: tuple[str, ...]
    evidence: tuple[str, ...]
    """Keys of `evidence.collect`'s sections that show this row met here."""


GDPR = "GDPR"
ISO = "ISO/IEC 27001:2022"
AI_ACT = "EU AI Act"

ROWS: tuple[Row, ...] = (
    Row(
        "Art. 5(1)(c), (e)",
        GDPR,
        "Data minimisation and storage limitation.",
        "Content is kept only under a tenant's policy (none by default), encrypted per data "
        "subject; retention.* deletes content, audit bodies and usage detail on schedule.",
        (
            "tests/unit/privacy/test_content.py::test_policies_keep_nothing_masked_or_everything",
            "tests/integration/test_retention.py::test_the_live_job_prunes_the_log_and_rolls_up_usage",
        ),
        ("retention", "art30"),
    ),
    Row(
        "Art. 17",
        GDPR,
        "Right to erasure.",
        "`sovllm privacy erase` shreds the subject's content key (crypto-shredding); the audit "
        "log keeps only a keyed pseudonym and still verifies.",
        (
            "tests/unit/privacy/test_content.py::test_erasure_shreds_one_subject_and_the_log_still_verifies",
            "tests/unit/privacy/test_erase_bytes.py::test_privacy_erase_cli_leaves_no_byte_of_the_key_on_disk",
        ),
        ("erasures",),
    ),
    Row(
        "Art. 25",
        GDPR,
        "Data protection by design and by default.",
        "Nothing leaves the machine by default; content is not kept by default; personal data "
        "can be masked before the model, and a prompt that cannot be checked is refused.",
        (
            "tests/integration/test_privacy.py::test_a_tenant_can_require_masking_before_the_model",
            "tests/integration/test_privacy.py::test_a_failing_detector_fails_closed",
            "tests/integration/test_tracing.py::test_without_an_endpoint_nothing_is_sent",
        ),
        ("art30",),
    ),
    Row(
        "Art. 30",
        GDPR,
        "Record of processing activities.",
        "Built from the live configuration and the tenants' content policies "
        "(`sovllm compliance records`); what is not configured is said to be missing.",
        (
            "tests/unit/test_compliance.py::test_the_record_follows_the_configuration_and_the_tenants",
        ),
        ("art30",),
    ),
    Row(
        "Art. 32",
        GDPR,
        "Security of processing.",
        "Keys stored as hashes, roles, private key files, a strict CSP, closed CORS, "
        "rate limits and lock-out of bad-key bursts; encrypted backups that restore "
        "(Art. 32(1)(c)).",
        (
            "tests/unit/test_identity.py::test_only_the_hash_is_stored",
            "tests/integration/test_private_files.py::test_the_server_keeps_its_files_private_and_its_key_out_of_its_output",
            "tests/browser/test_security.py::test_every_response_sets_a_strict_csp_and_nosniff",
            "tests/integration/test_access.py::test_a_burst_of_bad_keys_is_aggregated_and_then_its_source_is_refused",
            "tests/integration/test_backup.py::test_a_backup_under_load_restores_into_a_working_service",
        ),
        ("keys", "backups"),
    ),
    Row(
        "A.5.15",
        ISO,
        "Access control.",
        "Every API call needs a key of a role: user and reviewer keys act within their "
        "tenant; auditor and admin keys reach every tenant.",
        (
            "tests/integration/test_governance.py::test_roles",
            "tests/integration/test_governance.py::test_inference_needs_a_valid_key",
        ),
        ("keys",),
    ),
    Row(
        "A.8.2",
        ISO,
        "Privileged access rights.",
        "Admin keys are few and listed; each admin change is an audit entry with its actor.",
        ("tests/integration/test_audit.py::test_admin_actions_are_recorded_with_their_actor",),
        ("keys",),
    ),
    Row(
        "A.8.15",
        ISO,
        "Logging.",
        "A Merkle-tree audit log with signed checkpoints; an edit of a row a checkpoint "
        "covers is detected and named by `sovllm audit verify`, also after the checkpoints "
        "are deleted (each host keeps the last one it signed).",
        (
            "tests/integration/test_audit.py::test_verify_export_and_tamper_detection",
            "tests/unit/audit/test_columns.py::test_each_entry_column_edit_is_caught_and_named",
            "tests/unit/audit/test_head.py::"
            "test_checkpoints_deleted_and_an_entry_rewritten_are_caught_and_not_signed_over",
        ),
        ("verification", "checkpoint"),
    ),
    Row(
        "A.8.16",
        ISO,
        "Monitoring activities.",
        "Prometheus metrics with vLLM's names, alert rules checked with promtool, "
        "OpenTelemetry traces, audited reads.",
        (
            "tests/integration/test_prometheus.py::test_prometheus_fires_replica_down_when_a_worker_is_killed",
            "tests/integration/test_access.py::test_each_audited_read_is_an_entry_with_its_actor",
        ),
        ("verification",),
    ),
    Row(
        "A.8.17",
        ISO,
        "Clock synchronisation.",
        "The clock's synchronisation state and offset go into the audit log at start-up and "
        "hourly; an unsynchronised clock is a metric and a console warning.",
        (
            "tests/integration/test_incidents.py::test_the_clock_is_recorded_at_start_up",
            "tests/unit/test_incidents.py::test_the_clock_state_is_read_from_the_kernel",
        ),
        ("clock",),
    ),
    Row(
        "Art. 12",
        AI_ACT,
        "Record-keeping: automatic logging over the system's lifetime.",
        "Each request has a begin entry, durable before its first token, and an end entry.",
        (
            "tests/integration/test_audit.py::test_a_request_gets_a_begin_and_an_end_entry_without_its_content",
            "tests/integration/test_audit.py::test_the_begin_entry_is_durable_before_the_first_token",
        ),
        ("verification", "checkpoint"),
    ),
    Row(
        "Art. 13",
        AI_ACT,
        "Transparency and information to deployers.",
        "The model and its weights' hash are served with every answer's model list; this "
        "report and the Art. 30 record describe the processing.",
        (
            "tests/integration/test_openai_api.py::test_models_lists_the_model_with_its_weights_hash",
        ),
        ("model", "art30"),
    ),
    Row(
        "Art. 14",
        AI_ACT,
        "Human oversight: interpret, disregard or override an output; stop the system.",
        "A stop switch (cut or drain; all, a model or a tenant); review of answers (sampled "
        "or held) with override.",
        (
            "tests/integration/test_stop_switch.py::test_cut_ends_streams_with_stop_and_refuses_new_requests",
            "tests/integration/test_gateway_order.py::test_a_stopped_service_refuses_before_admission",
            "tests/integration/test_review.py::test_hold_returns_pending_then_the_approved_answer_once",
            "tests/integration/test_review.py::test_an_override_is_shown_to_the_client",
            "tests/integration/test_review.py::test_a_held_answer_stays_undelivered_across_a_restart",
        ),
        ("stops", "reviews"),
    ),
    Row(
        "Art. 15",
        AI_ACT,
        "Accuracy, robustness and cybersecurity, measured and declared.",
        "`sovllm eval` suites recorded with the model's hash; only approved weights load; "
        "TLS, also between the gateway and its workers.",
        (
            "tests/integration/test_eval.py::test_the_default_suite_is_scored_and_recorded_with_the_weights_hash",
            "tests/integration/test_model_allowlist.py::test_unapproved_weights_are_refused_then_approved_ones_served",
            "tests/integration/test_tls.py::test_a_gateway_reaches_its_workers_over_https",
        ),
        ("evals", "models"),
    ),
    Row(
        "Art. 19",
        AI_ACT,
        "Automatically generated logs kept at least six months.",
        "retention.audit_days below 183 is refused at start-up, citing the Act.",
        (
            "tests/unit/test_compliance.py::test_audit_retention_below_six_months_is_refused_citing_the_ai_act",
        ),
        ("retention",),
    ),
    Row(
        "Art. 26",
        AI_ACT,
        "Obligations of deployers: use, monitor, keep logs, inform.",
        "Usage per tenant and key, the stop switch, the logs kept, this report.",
        (
            "tests/integration/test_governance.py::test_rate_limit_429_with_openai_headers_and_usage",
        ),
        ("keys", "retention", "stops"),
    ),
    Row(
        "Art. 50",
        AI_ACT,
        "AI-generated output marked as such.",
        "Every answer carries a machine-readable marking.",
        ("tests/integration/test_openai_api.py::test_generated_output_is_marked_as_ai_generated",),
        ("model",),
    ),
    Row(
        "Art. 73",
        AI_ACT,
        "Reporting of serious incidents, within the deadlines.",
        "Incidents with severity classes, deadlines, linked requests and an export for the "
        "authority.",
        (
            "tests/integration/test_incidents.py::test_an_incident_from_opening_to_report",
            "tests/unit/test_incidents.py::test_the_deadline_runs_from_awareness",
        ),
        ("incidents",),
    ),
)
