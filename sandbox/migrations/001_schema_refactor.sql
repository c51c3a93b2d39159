-- 001_schema_refactor: Layer B "HIPAA persona" tables -> the refactored organization schema.
--
-- Runs as ONE transaction (the runner opens it; a failure anywhere leaves the database as it was).
-- What becomes of the legacy tables: clients_hipaa, sessions_hipaa and treatment_plans_hipaa are RENAMED into
-- patients, clinical_sessions and patient_treatment_plans, keeping every row and its id, so every legacy id is
-- the new id and no PHI is copied or left behind in a second table. therapist_phi and therapist_profiles keep
-- their names with renamed columns. The legacy data at backup time lives on in the verified pg_dump backup
-- (the integrity phase compares against it); 001_rollback.sql reverses every step in place.
-- ein_number (plaintext) moves, encrypted, to organizations.organization_business_ein_encrypted by a Python
-- data step; legal_business_name stays on therapist_profiles (migration 0002 of the app keeps it there too).

-- 1. users_auth gains the MFA enforcement timestamp, unless the app's migration 0009 already added it (the
-- rollback drops it only when this migration added it: the column comment says so).
DO $mfa$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'users_auth'::regclass AND attname = 'mfa_enforced_at'
                 AND NOT attisdropped) THEN
    ALTER TABLE users_auth ADD COLUMN mfa_enforced_at timestamp;
    COMMENT ON COLUMN users_auth.mfa_enforced_at IS 'added by 001_schema_refactor';
  END IF;
END $mfa$;

-- 2. Organizations: one solo practice per therapist user, named after the profile (or the username).
CREATE TABLE organizations (
    id serial PRIMARY KEY,
    name text NOT NULL,
    type text NOT NULL,
    organization_business_ein_encrypted text,
    organization_business_address text,
    organization_business_city text,
    organization_business_state text,
    organization_business_zip text,
    organization_business_phone text,
    organization_business_email text,
    default_session_duration integer DEFAULT 50,
    timezone text DEFAULT 'America/New_York',
    is_active boolean DEFAULT true,
    created_at timestamp DEFAULT now(),
    updated_at timestamp DEFAULT now()
);

CREATE TABLE organization_memberships (
    id serial PRIMARY KEY,
    organization_id integer NOT NULL,
    user_id integer NOT NULL,
    role text NOT NULL,
    can_view_all_patients boolean DEFAULT false,
    can_view_selected_patients jsonb DEFAULT '[]'::jsonb,
    can_view_all_calendars boolean DEFAULT false,
    can_view_selected_calendars jsonb DEFAULT '[]'::jsonb,
    can_manage_billing boolean DEFAULT false,
    can_manage_staff boolean DEFAULT false,
    can_manage_settings boolean DEFAULT false,
    can_create_patients boolean DEFAULT true,
    employment_start_date timestamp,
    employment_end_date timestamp,
    is_active boolean DEFAULT true,
    is_primary_owner boolean DEFAULT false,
    created_at timestamp DEFAULT now(),
    updated_at timestamp DEFAULT now(),
    CONSTRAINT organization_memberships_organization_id_organizations_id_fk
        FOREIGN KEY (organization_id) REFERENCES organizations(id) ON DELETE CASCADE,
    CONSTRAINT organization_memberships_user_id_users_auth_id_fk
        FOREIGN KEY (user_id) REFERENCES users_auth(id) ON DELETE CASCADE
);

-- The organization of user N gets id N: ids stay stable across rehearsals and easy to audit.
INSERT INTO organizations (id, name, type, organization_business_address, organization_business_city,
                           organization_business_state, organization_business_zip, organization_business_phone,
                           organization_business_email, created_at, updated_at)
SELECT u.id,
       coalesce(nullif(btrim(p.name), ''), u.username) || '''s Practice',
       'solo',
       p.business_address, p.business_city, p.business_state, p.business_zip_code, p.business_phone,
       p.business_email, u.created_at, u.created_at
FROM users_auth u
LEFT JOIN LATERAL (
    SELECT * FROM therapist_profiles tp WHERE tp.user_id = u.id ORDER BY tp.id LIMIT 1
) p ON true
ORDER BY u.id;

SELECT setval(pg_get_serial_sequence('organizations', 'id'), coalesce(max(id), 0) + 1, false) FROM organizations;

INSERT INTO organization_memberships (organization_id, user_id, role, can_view_all_patients, can_view_all_calendars,
                                      can_manage_billing, can_manage_staff, can_manage_settings, can_create_patients,
                                      employment_start_date, is_active, is_primary_owner)
SELECT o.id, o.id, 'business_owner', true, true, true, true, true, true, now(), true, true
FROM organizations o
ORDER BY o.id;

-- 3. The EIN leaves therapist_profiles in the clear and arrives in organizations encrypted (Python data step).
-- migration-gate: data-step sandbox.data_steps:encrypt_organization_ein

ALTER TABLE therapist_profiles DROP COLUMN ein_number;

-- 4. therapist_profiles: business_* become therapist_business_*; new profile columns.
ALTER TABLE therapist_profiles RENAME COLUMN business_address TO therapist_business_address;
ALTER TABLE therapist_profiles RENAME COLUMN business_city TO therapist_business_city;
ALTER TABLE therapist_profiles RENAME COLUMN business_state TO therapist_business_state;
ALTER TABLE therapist_profiles RENAME COLUMN business_zip_code TO therapist_business_zip;
ALTER TABLE therapist_profiles RENAME COLUMN business_phone TO therapist_business_phone;
ALTER TABLE therapist_profiles RENAME COLUMN business_email TO therapist_business_email;
-- The Drizzle schema types the renamed business columns as text (the legacy DDL had varchar(100/50/10)).
ALTER TABLE therapist_profiles
    ALTER COLUMN therapist_business_city TYPE text,
    ALTER COLUMN therapist_business_state TYPE text,
    ALTER COLUMN therapist_business_zip TYPE text;
ALTER TABLE therapist_profiles
    ADD COLUMN private_pay_rate numeric(10,2),
    ADD COLUMN biography text,
    ADD COLUMN years_of_experience integer,
    ADD COLUMN qualifications text,
    ADD COLUMN stripe_connect_account_id text,
    ADD COLUMN stripe_connect_onboarding_complete boolean DEFAULT false,
    ADD COLUMN stripe_connect_charges_enabled boolean DEFAULT false,
    ADD COLUMN stripe_connect_payouts_enabled boolean DEFAULT false,
    ADD COLUMN stripe_connect_details_submitted boolean DEFAULT false,
    ADD COLUMN stripe_connect_card_issuing_enabled boolean DEFAULT false,
    ADD CONSTRAINT therapist_profiles_stripe_connect_account_id_unique UNIQUE (stripe_connect_account_id);

-- 5. therapist_phi: persona-prefixed names, new fields, one row per user.
ALTER TABLE therapist_phi RENAME COLUMN ssn_encrypted TO therapist_ssn_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN date_of_birth_encrypted TO therapist_dob_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN personal_address_encrypted TO therapist_home_address_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN personal_phone_encrypted TO therapist_personal_phone_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN personal_email_encrypted TO therapist_personal_email_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN birth_city_encrypted TO therapist_birth_city_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN birth_state_encrypted TO therapist_birth_state_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN birth_country_encrypted TO therapist_birth_country_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN is_us_citizen TO therapist_is_us_citizen;
ALTER TABLE therapist_phi RENAME COLUMN work_permit_visa_encrypted TO therapist_work_permit_visa_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN emergency_contact_encrypted TO therapist_emergency_contact_name_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN emergency_phone_encrypted TO therapist_emergency_contact_phone_encrypted;
ALTER TABLE therapist_phi RENAME COLUMN personal_email_search_hash TO therapist_personal_email_search_hash;
ALTER TABLE therapist_phi RENAME COLUMN personal_phone_search_hash TO therapist_personal_phone_search_hash;
ALTER TABLE therapist_phi
    ADD COLUMN therapist_gender_encrypted text,
    ADD COLUMN therapist_race_encrypted text,
    ADD COLUMN therapist_home_city_encrypted text,
    ADD COLUMN therapist_home_state_encrypted text,
    ADD COLUMN therapist_home_zip_encrypted text,
    ADD COLUMN therapist_emergency_contact_relationship_encrypted text,
    ADD CONSTRAINT therapist_phi_user_id_unique UNIQUE (user_id);

-- 6. clients_hipaa becomes patients.
ALTER TABLE clients_hipaa RENAME TO patients;
ALTER SEQUENCE clients_hipaa_id_seq RENAME TO patients_id_seq;
ALTER TABLE patients RENAME CONSTRAINT clients_hipaa_pkey TO patients_pkey;
ALTER TABLE patients RENAME COLUMN therapist_id TO primary_therapist_id;
ALTER TABLE patients RENAME COLUMN email_encrypted TO patient_contact_email_encrypted;
ALTER TABLE patients RENAME COLUMN phone_encrypted TO patient_contact_phone_encrypted;
ALTER TABLE patients RENAME COLUMN address_encrypted TO patient_home_address_encrypted;
ALTER TABLE patients RENAME COLUMN city_encrypted TO patient_home_city_encrypted;
ALTER TABLE patients RENAME COLUMN state_encrypted TO patient_home_state_encrypted;
ALTER TABLE patients RENAME COLUMN zip_code_encrypted TO patient_home_zip_encrypted;
ALTER TABLE patients RENAME COLUMN date_of_birth_encrypted TO patient_dob_encrypted;
ALTER TABLE patients RENAME COLUMN gender_encrypted TO patient_gender_encrypted;
ALTER TABLE patients RENAME COLUMN race_encrypted TO patient_race_encrypted;
ALTER TABLE patients RENAME COLUMN ethnicity_encrypted TO patient_ethnicity_encrypted;
ALTER TABLE patients RENAME COLUMN pronouns_encrypted TO patient_pronouns_encrypted;
ALTER TABLE patients RENAME COLUMN hometown_encrypted TO patient_hometown_encrypted;
ALTER TABLE patients RENAME COLUMN notes_encrypted TO patient_clinical_notes_encrypted;
ALTER TABLE patients RENAME COLUMN diagnosis_codes_encrypted TO patient_diagnosis_codes_encrypted;
ALTER TABLE patients RENAME COLUMN treatment_history_encrypted TO patient_treatment_history_encrypted;
ALTER TABLE patients RENAME COLUMN primary_diagnosis_code_encrypted TO patient_primary_diagnosis_encrypted;
ALTER TABLE patients RENAME COLUMN secondary_diagnosis_code_encrypted TO patient_secondary_diagnosis_encrypted;
ALTER TABLE patients RENAME COLUMN referring_physician_encrypted TO patient_referring_physician_encrypted;
ALTER TABLE patients RENAME COLUMN referring_physician_npi_encrypted TO patient_referring_physician_npi_encrypted;
ALTER TABLE patients RENAME COLUMN insurance_info_encrypted TO patient_insurance_info_encrypted;
ALTER TABLE patients RENAME COLUMN authorization_info_encrypted TO patient_authorization_info_encrypted;
ALTER TABLE patients RENAME COLUMN prior_auth_number_encrypted TO patient_prior_auth_number_encrypted;
ALTER TABLE patients RENAME COLUMN member_id_encrypted TO patient_member_id_encrypted;
ALTER TABLE patients RENAME COLUMN group_number_encrypted TO patient_group_number_encrypted;
ALTER TABLE patients RENAME COLUMN primary_insured_name_encrypted TO patient_primary_insured_name_encrypted;
ALTER TABLE patients RENAME COLUMN email_search_hash TO patient_contact_email_search_hash;
ALTER TABLE patients RENAME COLUMN phone_search_hash TO patient_contact_phone_search_hash;
ALTER TABLE patients RENAME COLUMN photo_filename TO patient_photo_filename;
ALTER TABLE patients RENAME COLUMN photo_original_name TO patient_photo_original_name;
ALTER TABLE patients RENAME COLUMN photo_mime_type TO patient_photo_mime_type;
ALTER TABLE patients
    ADD COLUMN organization_id integer,
    ADD COLUMN assigned_therapist_ids jsonb DEFAULT '[]'::jsonb,
    ADD COLUMN patient_name_search_hash text,
    ADD COLUMN patient_tertiary_diagnosis_encrypted text,
    ADD COLUMN patient_medical_history_encrypted text,
    ADD COLUMN patient_insurance_provider_encrypted text,
    ADD COLUMN patient_primary_insured_dob_encrypted text;

-- One pass over patients: its practice and the name search hash (sha256 of lower(trim(name)), as the app's
-- createSearchHash: ICU lower-casing for non-ASCII names, JavaScript's trim() whitespace set).
UPDATE patients p
SET organization_id = m.organization_id,
    assigned_therapist_ids = '[]'::jsonb,
    patient_name_search_hash = CASE
        WHEN btrim(p.name, E' \t\n\r\f\x0b\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff') = '' THEN NULL
        ELSE encode(sha256(convert_to(btrim(lower(p.name COLLATE "und-x-icu"),
            E' \t\n\r\f\x0b\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff'),
            'UTF8')), 'hex')
    END
FROM organization_memberships m
WHERE m.user_id = p.primary_therapist_id AND m.is_primary_owner;

ALTER TABLE patients ALTER COLUMN organization_id SET NOT NULL;
ALTER TABLE patients DROP CONSTRAINT clients_hipaa_therapist_id_users_auth_id_fk;
ALTER TABLE patients
    ADD CONSTRAINT patients_organization_id_organizations_id_fk
        FOREIGN KEY (organization_id) REFERENCES organizations(id) ON DELETE RESTRICT,
    ADD CONSTRAINT patients_primary_therapist_id_users_auth_id_fk
        FOREIGN KEY (primary_therapist_id) REFERENCES users_auth(id);

-- 7. sessions_hipaa becomes clinical_sessions (what 0009 meant to do, with every PHI column carried).
ALTER TABLE sessions_hipaa RENAME TO clinical_sessions;
ALTER SEQUENCE sessions_hipaa_id_seq RENAME TO clinical_sessions_id_seq;
ALTER TABLE clinical_sessions RENAME CONSTRAINT sessions_hipaa_pkey TO clinical_sessions_pkey;
ALTER TABLE clinical_sessions RENAME COLUMN client_id TO patient_id;
ALTER TABLE clinical_sessions RENAME COLUMN notes_encrypted TO session_clinical_notes_encrypted;
ALTER TABLE clinical_sessions RENAME COLUMN assessments_encrypted TO session_assessment_notes_encrypted;
ALTER TABLE clinical_sessions RENAME COLUMN treatment_goals_encrypted TO session_treatment_goals_encrypted;
ALTER TABLE clinical_sessions RENAME COLUMN progress_notes_encrypted TO session_progress_notes_encrypted;
ALTER TABLE clinical_sessions
    ADD COLUMN organization_id integer,
    ADD COLUMN session_subjective_notes_encrypted text,
    ADD COLUMN session_objective_notes_encrypted text,
    ADD COLUMN session_plan_notes_encrypted text,
    ADD COLUMN session_interventions_encrypted text;

UPDATE clinical_sessions s SET organization_id = p.organization_id FROM patients p WHERE p.id = s.patient_id;

ALTER TABLE clinical_sessions ALTER COLUMN organization_id SET NOT NULL;
ALTER TABLE clinical_sessions DROP CONSTRAINT sessions_hipaa_client_id_clients_hipaa_id_fk;
ALTER TABLE clinical_sessions DROP CONSTRAINT sessions_hipaa_therapist_id_users_auth_id_fk;
ALTER TABLE clinical_sessions
    ADD CONSTRAINT clinical_sessions_organization_id_organizations_id_fk
        FOREIGN KEY (organization_id) REFERENCES organizations(id) ON DELETE RESTRICT,
    ADD CONSTRAINT clinical_sessions_patient_id_patients_id_fk
        FOREIGN KEY (patient_id) REFERENCES patients(id) ON DELETE RESTRICT,
    ADD CONSTRAINT clinical_sessions_therapist_id_users_auth_id_fk
        FOREIGN KEY (therapist_id) REFERENCES users_auth(id);

-- 8. treatment_plans_hipaa becomes patient_treatment_plans.
ALTER TABLE treatment_plans_hipaa RENAME TO patient_treatment_plans;
ALTER SEQUENCE treatment_plans_hipaa_id_seq RENAME TO patient_treatment_plans_id_seq;
ALTER TABLE patient_treatment_plans RENAME CONSTRAINT treatment_plans_hipaa_pkey TO patient_treatment_plans_pkey;
ALTER TABLE patient_treatment_plans RENAME COLUMN client_id TO patient_id;
ALTER TABLE patient_treatment_plans RENAME COLUMN content_encrypted TO treatment_plan_content_encrypted;
ALTER TABLE patient_treatment_plans RENAME COLUMN goals_encrypted TO treatment_plan_goals_encrypted;
ALTER TABLE patient_treatment_plans RENAME COLUMN objectives_encrypted TO treatment_plan_objectives_encrypted;
ALTER TABLE patient_treatment_plans RENAME COLUMN interventions_encrypted TO treatment_plan_interventions_encrypted;
ALTER TABLE patient_treatment_plans RENAME COLUMN progress_notes_encrypted TO treatment_plan_progress_notes_encrypted;
ALTER TABLE patient_treatment_plans
    ADD COLUMN organization_id integer,
    ADD COLUMN treatment_plan_diagnosis_encrypted text,
    ADD COLUMN treatment_plan_assessment_encrypted text,
    ADD COLUMN next_review_date timestamp;

UPDATE patient_treatment_plans t SET organization_id = p.organization_id FROM patients p WHERE p.id = t.patient_id;

ALTER TABLE patient_treatment_plans ALTER COLUMN organization_id SET NOT NULL;
ALTER TABLE patient_treatment_plans DROP CONSTRAINT treatment_plans_hipaa_client_id_clients_hipaa_id_fk;
ALTER TABLE patient_treatment_plans DROP CONSTRAINT treatment_plans_hipaa_therapist_id_users_auth_id_fk;
ALTER TABLE patient_treatment_plans
    ADD CONSTRAINT patient_treatment_plans_organization_id_organizations_id_fk
        FOREIGN KEY (organization_id) REFERENCES organizations(id) ON DELETE RESTRICT,
    ADD CONSTRAINT patient_treatment_plans_patient_id_patients_id_fk
        FOREIGN KEY (patient_id) REFERENCES patients(id) ON DELETE RESTRICT,
    ADD CONSTRAINT patient_treatment_plans_therapist_id_users_auth_id_fk
        FOREIGN KEY (therapist_id) REFERENCES users_auth(id);

-- 9. An index on every foreign-key column.
CREATE INDEX idx_patients_organization_id ON patients (organization_id);
CREATE INDEX idx_patients_primary_therapist_id ON patients (primary_therapist_id);
CREATE INDEX idx_patients_deleted ON patients (deleted);
CREATE INDEX idx_clinical_sessions_organization_id ON clinical_sessions (organization_id);
CREATE INDEX idx_clinical_sessions_patient_id ON clinical_sessions (patient_id);
CREATE INDEX idx_clinical_sessions_therapist_id ON clinical_sessions (therapist_id);
CREATE INDEX idx_patient_treatment_plans_organization_id ON patient_treatment_plans (organization_id);
CREATE INDEX idx_patient_treatment_plans_patient_id ON patient_treatment_plans (patient_id);
CREATE INDEX idx_patient_treatment_plans_therapist_id ON patient_treatment_plans (therapist_id);
CREATE INDEX idx_organization_memberships_organization_id ON organization_memberships (organization_id);
CREATE INDEX idx_organization_memberships_user_id ON organization_memberships (user_id);
CREATE INDEX idx_therapist_profiles_user_id ON therapist_profiles (user_id);
CREATE INDEX idx_audit_logs_hipaa_user_id ON audit_logs_hipaa (user_id);

-- 10. Every sequence ahead of its table's max(id).
SELECT setval('patients_id_seq', coalesce(max(id), 0) + 1, false) FROM patients;
SELECT setval('clinical_sessions_id_seq', coalesce(max(id), 0) + 1, false) FROM clinical_sessions;
SELECT setval('patient_treatment_plans_id_seq', coalesce(max(id), 0) + 1, false) FROM patient_treatment_plans;
SELECT setval(pg_get_serial_sequence('organization_memberships', 'id'), coalesce(max(id), 0) + 1, false)
FROM organization_memberships;

-- 11. The app's own role (migration.toml [app_role]; the app does not connect as the owner): the tables created
-- here get what it needs, as the app's deploy must grant them. Renamed tables keep the grants they had.
GRANT SELECT, INSERT, UPDATE ON organizations, organization_memberships TO app_user;
GRANT USAGE ON SEQUENCE organizations_id_seq, organization_memberships_id_seq TO app_user;

ANALYZE patients;
ANALYZE clinical_sessions;
ANALYZE patient_treatment_plans;
ANALYZE organizations;
ANALYZE organization_memberships;
