-- 001_rollback: the refactored schema back to Layer B, in place, in ONE transaction.
--
-- Every row keeps its id, so rows written after the migration survive the rollback (patients, sessions,
-- plans, audit rows). What has no place in Layer B is dropped: organizations, memberships and the columns the
-- refactor added (a value written into one of them after the migration is lost; the report says so).
-- The EIN goes back to therapist_profiles.ein_number in the clear, decrypted by a Python data step.

ALTER TABLE therapist_profiles ADD COLUMN ein_number varchar(20);
-- migration-gate: data-step sandbox.data_steps:decrypt_organization_ein

DROP INDEX idx_patients_organization_id, idx_patients_primary_therapist_id, idx_patients_deleted,
    idx_clinical_sessions_organization_id, idx_clinical_sessions_patient_id, idx_clinical_sessions_therapist_id,
    idx_patient_treatment_plans_organization_id, idx_patient_treatment_plans_patient_id,
    idx_patient_treatment_plans_therapist_id, idx_organization_memberships_organization_id,
    idx_organization_memberships_user_id, idx_therapist_profiles_user_id, idx_audit_logs_hipaa_user_id;

-- patient_treatment_plans -> treatment_plans_hipaa
ALTER TABLE patient_treatment_plans
    DROP CONSTRAINT patient_treatment_plans_organization_id_organizations_id_fk,
    DROP CONSTRAINT patient_treatment_plans_patient_id_patients_id_fk,
    DROP CONSTRAINT patient_treatment_plans_therapist_id_users_auth_id_fk,
    DROP COLUMN organization_id,
    DROP COLUMN treatment_plan_diagnosis_encrypted,
    DROP COLUMN treatment_plan_assessment_encrypted,
    DROP COLUMN next_review_date;
ALTER TABLE patient_treatment_plans RENAME COLUMN treatment_plan_progress_notes_encrypted TO progress_notes_encrypted;
ALTER TABLE patient_treatment_plans RENAME COLUMN treatment_plan_interventions_encrypted TO interventions_encrypted;
ALTER TABLE patient_treatment_plans RENAME COLUMN treatment_plan_objectives_encrypted TO objectives_encrypted;
ALTER TABLE patient_treatment_plans RENAME COLUMN treatment_plan_goals_encrypted TO goals_encrypted;
ALTER TABLE patient_treatment_plans RENAME COLUMN treatment_plan_content_encrypted TO content_encrypted;
ALTER TABLE patient_treatment_plans RENAME COLUMN patient_id TO client_id;
ALTER TABLE patient_treatment_plans RENAME CONSTRAINT patient_treatment_plans_pkey TO treatment_plans_hipaa_pkey;
ALTER SEQUENCE patient_treatment_plans_id_seq RENAME TO treatment_plans_hipaa_id_seq;
ALTER TABLE patient_treatment_plans RENAME TO treatment_plans_hipaa;

-- clinical_sessions -> sessions_hipaa
ALTER TABLE clinical_sessions
    DROP CONSTRAINT clinical_sessions_organization_id_organizations_id_fk,
    DROP CONSTRAINT clinical_sessions_patient_id_patients_id_fk,
    DROP CONSTRAINT clinical_sessions_therapist_id_users_auth_id_fk,
    DROP COLUMN organization_id,
    DROP COLUMN session_subjective_notes_encrypted,
    DROP COLUMN session_objective_notes_encrypted,
    DROP COLUMN session_plan_notes_encrypted,
    DROP COLUMN session_interventions_encrypted;
ALTER TABLE clinical_sessions RENAME COLUMN session_progress_notes_encrypted TO progress_notes_encrypted;
ALTER TABLE clinical_sessions RENAME COLUMN session_treatment_goals_encrypted TO treatment_goals_encrypted;
ALTER TABLE clinical_sessions RENAME COLUMN session_assessment_notes_encrypted TO assessments_encrypted;
ALTER TABLE clinical_sessions RENAME COLUMN session_clinical_notes_encrypted TO notes_encrypted;
ALTER TABLE clinical_sessions RENAME COLUMN patient_id TO client_id;
ALTER TABLE clinical_sessions RENAME CONSTRAINT clinical_sessions_pkey TO sessions_hipaa_pkey;
ALTER SEQUENCE clinical_sessions_id_seq RENAME TO sessions_hipaa_id_seq;
ALTER TABLE clinical_sessions RENAME TO sessions_hipaa;

-- patients -> clients_hipaa
ALTER TABLE patients
    DROP CONSTRAINT patients_organization_id_organizations_id_fk,
    DROP CONSTRAINT patients_primary_therapist_id_users_auth_id_fk,
    DROP COLUMN organization_id,
    DROP COLUMN assigned_therapist_ids,
    DROP COLUMN patient_name_search_hash,
    DROP COLUMN patient_tertiary_diagnosis_encrypted,
    DROP COLUMN patient_medical_history_encrypted,
    DROP COLUMN patient_insurance_provider_encrypted,
    DROP COLUMN patient_primary_insured_dob_encrypted;
ALTER TABLE patients RENAME COLUMN patient_photo_mime_type TO photo_mime_type;
ALTER TABLE patients RENAME COLUMN patient_photo_original_name TO photo_original_name;
ALTER TABLE patients RENAME COLUMN patient_photo_filename TO photo_filename;
ALTER TABLE patients RENAME COLUMN patient_contact_phone_search_hash TO phone_search_hash;
ALTER TABLE patients RENAME COLUMN patient_contact_email_search_hash TO email_search_hash;
ALTER TABLE patients RENAME COLUMN patient_primary_insured_name_encrypted TO primary_insured_name_encrypted;
ALTER TABLE patients RENAME COLUMN patient_group_number_encrypted TO group_number_encrypted;
ALTER TABLE patients RENAME COLUMN patient_member_id_encrypted TO member_id_encrypted;
ALTER TABLE patients RENAME COLUMN patient_prior_auth_number_encrypted TO prior_auth_number_encrypted;
ALTER TABLE patients RENAME COLUMN patient_authorization_info_encrypted TO authorization_info_encrypted;
ALTER TABLE patients RENAME COLUMN patient_insurance_info_encrypted TO insurance_info_encrypted;
ALTER TABLE patients RENAME COLUMN patient_referring_physician_npi_encrypted TO referring_physician_npi_encrypted;
ALTER TABLE patients RENAME COLUMN patient_referring_physician_encrypted TO referring_physician_encrypted;
ALTER TABLE patients RENAME COLUMN patient_secondary_diagnosis_encrypted TO secondary_diagnosis_code_encrypted;
ALTER TABLE patients RENAME COLUMN patient_primary_diagnosis_encrypted TO primary_diagnosis_code_encrypted;
ALTER TABLE patients RENAME COLUMN patient_treatment_history_encrypted TO treatment_history_encrypted;
ALTER TABLE patients RENAME COLUMN patient_diagnosis_codes_encrypted TO diagnosis_codes_encrypted;
ALTER TABLE patients RENAME COLUMN patient_clinical_notes_encrypted TO notes_encrypted;
ALTER TABLE patients RENAME COLUMN patient_hometown_encrypted TO hometown_encrypted;
ALTER TABLE patients RENAME COLUMN patient_pronouns_encrypted TO pronouns_encrypted;
ALTER TABLE patients RENAME COLUMN patient_ethnicity_encrypted TO ethnicity_encrypted;
ALTER TABLE patients RENAME COLUMN patient_race_encrypted TO race_encrypted;
ALTER TABLE patients RENAME COLUMN patient_gender_encrypted TO gender_encrypted;
ALTER TABLE patients RENAME COLUMN patient_dob_encrypted TO date_of_birth_encrypted;
ALTER TABLE patients RENAME COLUMN patient_home_zip_encrypted TO zip_code_encrypted;
ALTER TABLE patients RENAME COLUMN patient_home_state_encrypted TO state_encrypted;
ALTER TABLE patients RENAME COLUMN patient_home_city_encrypted TO city_encrypted;
ALTER TABLE patients RENAME COLUMN patient_home_address_encrypted TO address_encrypted;
ALTER TABLE patients RENAME COLUMN patient_contact_phone_encrypted TO phone_encrypted;
ALTER TABLE patients RENAME COLUMN patient_contact_email_encrypted TO email_encrypted;
ALTER TABLE patients RENAME COLUMN primary_therapist_id TO therapist_id;
ALTER TABLE patients RENAME CONSTRAINT patients_pkey TO clients_hipaa_pkey;
ALTER SEQUENCE patients_id_seq RENAME TO clients_hipaa_id_seq;
ALTER TABLE patients RENAME TO clients_hipaa;

-- therapist_phi
ALTER TABLE therapist_phi
    DROP CONSTRAINT therapist_phi_user_id_unique,
    DROP COLUMN therapist_gender_encrypted,
    DROP COLUMN therapist_race_encrypted,
    DROP COLUMN therapist_home_city_encrypted,
    DROP COLUMN therapist_home_state_encrypted,
    DROP COLUMN therapist_home_zip_encrypted,
    DROP COLUMN therapist_emergency_contact_relationship_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN therapist_personal_phone_search_hash TO personal_phone_search_hash;
ALTER TABLE therapist_phi RENAME COLUMN therapist_personal_email_search_hash TO personal_email_search_hash;
ALTER TABLE therapist_phi RENAME COLUMN therapist_emergency_contact_phone_encrypted TO emergency_phone_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN therapist_emergency_contact_name_encrypted TO emergency_contact_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN therapist_work_permit_visa_encrypted TO work_permit_visa_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN therapist_is_us_citizen TO is_us_citizen;
ALTER TABLE therapist_phi RENAME COLUMN therapist_birth_country_encrypted TO birth_country_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN therapist_birth_state_encrypted TO birth_state_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN therapist_birth_city_encrypted TO birth_city_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN therapist_personal_email_encrypted TO personal_email_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN therapist_personal_phone_encrypted TO personal_phone_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN therapist_home_address_encrypted TO personal_address_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN therapist_dob_encrypted TO date_of_birth_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN therapist_ssn_encrypted TO ssn_encrypted;

-- therapist_profiles
ALTER TABLE therapist_profiles
    DROP CONSTRAINT therapist_profiles_stripe_connect_account_id_unique,
    DROP COLUMN private_pay_rate,
    DROP COLUMN biography,
    DROP COLUMN years_of_experience,
    DROP COLUMN qualifications,
    DROP COLUMN stripe_connect_account_id,
    DROP COLUMN stripe_connect_onboarding_complete,
    DROP COLUMN stripe_connect_charges_enabled,
    DROP COLUMN stripe_connect_payouts_enabled,
    DROP COLUMN stripe_connect_details_submitted,
    DROP COLUMN stripe_connect_card_issuing_enabled;
ALTER TABLE therapist_profiles RENAME COLUMN therapist_business_email TO business_email;
ALTER TABLE therapist_profiles RENAME COLUMN therapist_business_phone TO business_phone;
ALTER TABLE therapist_profiles RENAME COLUMN therapist_business_zip TO business_zip_code;
ALTER TABLE therapist_profiles RENAME COLUMN therapist_business_state TO business_state;
ALTER TABLE therapist_profiles RENAME COLUMN therapist_business_city TO business_city;
ALTER TABLE therapist_profiles RENAME COLUMN therapist_business_address TO business_address;
ALTER TABLE therapist_profiles
    ALTER COLUMN business_city TYPE varchar(100),
    ALTER COLUMN business_state TYPE varchar(50),
    ALTER COLUMN business_zip_code TYPE varchar(10);
-- ein_number came back as the last column; in Layer B it sits before legal_business_name. An app (or a COPY,
-- an INSERT) without a column list depends on the order, so the columns after it move behind it again: each is
-- re-added at the end, filled from the old one, which is then dropped (RB-01 compares the column order).
ALTER TABLE therapist_profiles
    ADD COLUMN legal_business_name__moved varchar(255),
    ADD COLUMN default_note_format__moved text,
    ADD COLUMN session_duration__moved integer,
    ADD COLUMN time_zone__moved text,
    ADD COLUMN is_insurance_provider__moved boolean,
    ADD COLUMN accepted_providers__moved jsonb,
    ADD COLUMN group_session_rate__moved numeric(10,2),
    ADD COLUMN cv_filename__moved text,
    ADD COLUMN cv_original_name__moved text,
    ADD COLUMN cv_mime_type__moved text,
    ADD COLUMN cv_parsed_for_credentialing__moved boolean,
    ADD COLUMN created_at__moved timestamp,
    ADD COLUMN updated_at__moved timestamp;
UPDATE therapist_profiles SET
    legal_business_name__moved = legal_business_name,
    default_note_format__moved = default_note_format,
    session_duration__moved = session_duration,
    time_zone__moved = time_zone,
    is_insurance_provider__moved = is_insurance_provider,
    accepted_providers__moved = accepted_providers,
    group_session_rate__moved = group_session_rate,
    cv_filename__moved = cv_filename,
    cv_original_name__moved = cv_original_name,
    cv_mime_type__moved = cv_mime_type,
    cv_parsed_for_credentialing__moved = cv_parsed_for_credentialing,
    created_at__moved = created_at,
    updated_at__moved = updated_at;
ALTER TABLE therapist_profiles
    DROP COLUMN legal_business_name,
    DROP COLUMN default_note_format,
    DROP COLUMN session_duration,
    DROP COLUMN time_zone,
    DROP COLUMN is_insurance_provider,
    DROP COLUMN accepted_providers,
    DROP COLUMN group_session_rate,
    DROP COLUMN cv_filename,
    DROP COLUMN cv_original_name,
    DROP COLUMN cv_mime_type,
    DROP COLUMN cv_parsed_for_credentialing,
    DROP COLUMN created_at,
    DROP COLUMN updated_at;
ALTER TABLE therapist_profiles RENAME COLUMN legal_business_name__moved TO legal_business_name;
ALTER TABLE therapist_profiles RENAME COLUMN default_note_format__moved TO default_note_format;
ALTER TABLE therapist_profiles RENAME COLUMN session_duration__moved TO session_duration;
ALTER TABLE therapist_profiles RENAME COLUMN time_zone__moved TO time_zone;
ALTER TABLE therapist_profiles RENAME COLUMN is_insurance_provider__moved TO is_insurance_provider;
ALTER TABLE therapist_profiles RENAME COLUMN accepted_providers__moved TO accepted_providers;
ALTER TABLE therapist_profiles RENAME COLUMN group_session_rate__moved TO group_session_rate;
ALTER TABLE therapist_profiles RENAME COLUMN cv_filename__moved TO cv_filename;
ALTER TABLE therapist_profiles RENAME COLUMN cv_original_name__moved TO cv_original_name;
ALTER TABLE therapist_profiles RENAME COLUMN cv_mime_type__moved TO cv_mime_type;
ALTER TABLE therapist_profiles RENAME COLUMN cv_parsed_for_credentialing__moved TO cv_parsed_for_credentialing;
ALTER TABLE therapist_profiles RENAME COLUMN created_at__moved TO created_at;
ALTER TABLE therapist_profiles RENAME COLUMN updated_at__moved TO updated_at;
ALTER TABLE therapist_profiles
    ALTER COLUMN default_note_format SET DEFAULT 'SOAP',
    ALTER COLUMN session_duration SET DEFAULT 50,
    ALTER COLUMN time_zone SET DEFAULT 'America/New_York',
    ALTER COLUMN is_insurance_provider SET DEFAULT false,
    ALTER COLUMN accepted_providers SET DEFAULT '[]'::jsonb,
    ALTER COLUMN cv_parsed_for_credentialing SET DEFAULT false,
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN updated_at SET DEFAULT now();

-- organizations and memberships have no place in Layer B.
DROP TABLE organization_memberships;
DROP TABLE organizations;
DO $mfa$ BEGIN
  IF col_description('users_auth'::regclass, (SELECT attnum FROM pg_attribute WHERE attrelid = 'users_auth'::regclass
                     AND attname = 'mfa_enforced_at' AND NOT attisdropped)) = 'added by 001_schema_refactor' THEN
    ALTER TABLE users_auth DROP COLUMN mfa_enforced_at;
  END IF;
END $mfa$;

-- Layer B's foreign keys, with their names and ON DELETE CASCADE.
ALTER TABLE clients_hipaa ADD CONSTRAINT clients_hipaa_therapist_id_users_auth_id_fk
    FOREIGN KEY (therapist_id) REFERENCES users_auth(id) ON DELETE CASCADE;
ALTER TABLE sessions_hipaa
    ADD CONSTRAINT sessions_hipaa_therapist_id_users_auth_id_fk
        FOREIGN KEY (therapist_id) REFERENCES users_auth(id) ON DELETE CASCADE,
    ADD CONSTRAINT sessions_hipaa_client_id_clients_hipaa_id_fk
        FOREIGN KEY (client_id) REFERENCES clients_hipaa(id) ON DELETE CASCADE;
ALTER TABLE treatment_plans_hipaa
    ADD CONSTRAINT treatment_plans_hipaa_therapist_id_users_auth_id_fk
        FOREIGN KEY (therapist_id) REFERENCES users_auth(id) ON DELETE CASCADE,
    ADD CONSTRAINT treatment_plans_hipaa_client_id_clients_hipaa_id_fk
        FOREIGN KEY (client_id) REFERENCES clients_hipaa(id) ON DELETE CASCADE;
