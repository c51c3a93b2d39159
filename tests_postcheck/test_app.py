"""Post-migration: the app, deployed with USE_HIPAA_SCHEMA=true, works for existing users."""

import pytest

from migration_gate.app import answers, logsource, ownrequests, performance
from migration_gate.checks import api as app

pytestmark = [pytest.mark.postmigration, pytest.mark.app]


@pytest.fixture
def token(gate_api, gate_api_credentials) -> str:
    return app.login(gate_api, *gate_api_credentials)


def _paths(gate_config) -> list[str]:
    return [e.path for e in gate_config.endpoints]


@pytest.mark.criterion("POST-06")
def test_app_is_healthy_on_the_new_schema(gate_api):
    app.health(gate_api, expect_hipaa=True).expect()


@pytest.mark.criterion("POST-07")
def test_login_works_for_existing_users(gate_api, gate_api_credentials, gate_db, gate_config):
    app.login_works(gate_api, *gate_api_credentials, conn=gate_db, users=gate_config.api.users).expect()


@pytest.mark.criterion("POST-08")
def test_protected_routes_need_a_token(gate_api, token, gate_config, gate_run_dir):
    app.protected_routes(gate_api, token, _paths(gate_config),
                         on_bad_request=ownrequests.recorder(gate_run_dir)).expect()


@pytest.mark.criterion("POST-09")
def test_every_endpoint_answers_with_its_shape_and_counts_agree_with_the_database(gate_api, token, gate_config, gate_db,
                                                                                  gate_api_user_id):
    app.endpoint_shapes(gate_api, token, gate_config.api, gate_db, gate_api_user_id, use_hipaa_schema=True).expect()


@pytest.mark.criterion("POST-09")
def test_no_ciphertext_or_password_hash_in_responses(gate_api, token, gate_config):
    app.no_secrets_in_responses(gate_api, token, _paths(gate_config)).expect()


@pytest.mark.criterion("POST-09")
def test_no_password_hash_in_the_routes_that_return_the_user(gate_api, token, gate_config):
    app.no_secrets_in_responses(gate_api, token, gate_config.api.user_routes,
                                check="the routes returning the user carry no password hash").expect()


@pytest.mark.criterion("POST-10")
def test_p95_latency_per_endpoint_within_the_baseline_budget(gate_api, gate_api_credentials, gate_config, gate_session,
                                                              gate_run_dir, gate_target):
    plan = performance.plan(gate_config, str(gate_api.base_url), *gate_api_credentials, gate_session.env.api_headers)
    performance.check_after(plan, gate_run_dir, gate_config, "postmigration", dsn=gate_target.dsn).expect()


@pytest.mark.criterion("POST-11")
def test_no_error_lines_in_the_application_log_since_the_deploy(gate_target, gate_config, gate_api, gate_run_dir):
    gate_api.get("/health")  # at least this request is in the window, so an empty window means the logs are unseen
    source = gate_target.log_source or logsource.configured(gate_config.logs, gate_config.hooks,
                                                            gate_target.app_log_file)
    app.logs_clean(source, gate_target.log_marker, requests_made=1,
                   own_requests=ownrequests.read(gate_run_dir)).expect()


@pytest.mark.criterion("POST-12")
def test_phi_reads_write_audit_rows(gate_api, token, gate_db, gate_api_user_id, gate_config):
    app.audit_rows_written(gate_api, token, gate_db, gate_api_user_id, gate_config.audited,
                           gate_config.api.audit).expect()


@pytest.mark.criterion("POST-16")
def test_search_by_a_mixed_case_padded_email_finds_the_patient(gate_api, token, gate_session, gate_run_dir,
                                                                gate_config):
    if not gate_session.env.embedded and not gate_session.context.allow_writes:
        pytest.skip("writes a probe patient: only on the sandbox or with GATE_ALLOW_WRITES=1 (staging)")
    app.search_finds_patient(gate_api, token,
                             on_created=lambda pid: answers.note_own_write(gate_run_dir, "/api/patients", pid),
                             probe=gate_config.api.probe).expect()


@pytest.mark.criterion("POST-19")
def test_the_app_gives_the_same_answers_as_before(gate_api, gate_api_credentials, gate_config, gate_session,
                                                  gate_run_dir):
    if not gate_config.answers.requests:
        pytest.skip("[answers] lists no requests: the app's answers are not compared")
    answers.check_after(gate_api, gate_config.answers, gate_session.key, gate_run_dir,
                        answers.environment(*gate_api_credentials)).expect()


@pytest.mark.criterion("POST-20")
def test_debug_routes_do_not_answer_without_a_token(gate_api, gate_config):
    app.debug_endpoints_closed(gate_api, gate_config.api.debug_routes).expect()


@pytest.mark.criterion("POST-21")
def test_every_configured_route_answers(gate_api, token, gate_config):
    routes = [*_paths(gate_config), *gate_config.api.user_routes, *gate_config.api.routes]
    app.routes_answer(gate_api, token, routes).expect()
